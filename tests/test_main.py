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
