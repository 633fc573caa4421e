"""``fhir-server``'s command line (``app.cli``)."""

from __future__ import annotations

import uvicorn

from app.cli import event_loop
from app.serving_loop import BatchAcceptLoop, new_event_loop


def test_uvicorn_serves_on_the_loop_the_command_names() -> None:
    """``fhir-server serve`` gives uvicorn the loop by name (``app.cli.event_loop``); uvicorn turns
    the name into this module's factory."""
    factory = uvicorn.Config(app="app.main:create_app", loop=event_loop(1)).get_loop_factory()
    assert factory is new_event_loop
    loop = factory()
    try:
        assert isinstance(loop, BatchAcceptLoop)
    finally:
        loop.close()
    assert event_loop(2) == "uvloop"  # several workers share one socket: uvloop spreads a burst over them
