"""The app factory and its start-up."""

from __future__ import annotations

import gc

from app.config import Settings
from app.main import create_app


async def test_the_start_up_heap_is_frozen(settings: Settings) -> None:
    """Definitions and models built at start-up are out of the cyclic collector's sight (gc.freeze)."""
    gc.unfreeze()
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        frozen = gc.get_freeze_count()
    gc.unfreeze()
    assert frozen > 100_000, frozen  # the fhir.resources models and the search registry alone are more


async def test_the_postgresql_pool_is_opened_at_start_up(settings: Settings, backend: str) -> None:
    """Before the first request every connection of a PostgreSQL pool is open (``Database.open_pool``);
    SQLite's open when needed."""
    application = create_app(settings)
    pool = application.state.fhir.current.db.engine.pool
    async with application.router.lifespan_context(application):
        opened = settings.db_pool_size + pool.overflow()  # QueuePool counts from -size up as it opens
    gc.unfreeze()
    assert opened == (settings.db_pool_size if backend == "postgresql" else 1)


def test_the_shipped_definitions_are_read_once_per_process(settings: Settings) -> None:
    """Apps of one process share the immutable tables built from the shipped definitions, and render
    the CapabilityStatement only when it is first asked for."""
    first, second = create_app(settings), create_app(settings)
    one, other = first.state.fhir.current, second.state.fhir.current
    assert one.registry is other.registry
    assert one.validator.bindings is other.validator.bindings
    assert first.state.auth.http is not second.state.auth.http  # each app its own client, closed with it
    assert first.state.capability._for is None
    body = first.state.capability.body(one.registry)
    assert b'"resourceType":"CapabilityStatement"' in body and first.state.capability._for is one.registry
