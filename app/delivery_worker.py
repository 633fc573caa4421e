"""``fhir-server deliver``: the process that sends Subscription notifications, beside the server's workers.

A worker saturated by requests keeps its event loop's ready queue full,
and every ``await`` of a delivery sharing that loop waits behind all of
them: under load a notification took seconds to leave. In a process of its
own the dispatcher runs on an idle loop, and the operating system, not the
interpreter lock, shares the cores. Workers and delivery processes share
the outbox through the database (``FOR UPDATE SKIP LOCKED`` leases, so any
number can run); a worker whose write stored events wakes them with a
PostgreSQL NOTIFY, and they poll every ``FHIR_SUBSCRIPTION_POLL_SECONDS`` in
case one is missed. ``fhir-server serve`` starts one when
``FHIR_SUBSCRIPTION_DELIVERY`` is ``process`` or ``auto`` on PostgreSQL, and
stops it with itself (``app.cli``).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal

from app.config import Settings
from app.interactions.context import ContextHolder
from app.interactions.search_parameters import reload_search_parameters
from app.main import create_app, watch_search_parameters
from app.subscriptions.service import Subscriptions


async def deliver(settings: Settings) -> None:
    """Deliver until SIGTERM or SIGINT; undelivered events stay in the outbox for the next one."""
    app = create_app(settings)
    holder: ContextHolder = app.state.fhir
    subscriptions: Subscriptions = app.state.subscriptions
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await reload_search_parameters(holder)  # criteria may use custom SearchParameters
    watcher = asyncio.create_task(watch_search_parameters(holder, settings.search_parameter_refresh_seconds))
    await subscriptions.start(deliver=True)
    try:
        await stop.wait()
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        await subscriptions.close()
        await app.state.auth.close()
        await holder.current.db.dispose()
