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

It runs at a lower CPU priority than the workers
(``FHIR_SUBSCRIPTION_DELIVERY_NICE``, added to its niceness): the workers'
requests are what clients wait for, while a notification's budget is a
second or more, and at equal priority each notifying write's delivery
would preempt a busy worker on the cores they share (Linux's scheduler
favours a task that has just woken over one that has been running; the
less a task weighs, the less it preempts).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal

from app.config import Settings
from app.interactions.context import ContextHolder
from app.interactions.search_parameters import reload_search_parameters
from app.main import create_app, watch_search_parameters
from app.subscriptions.service import Subscriptions


async def deliver(settings: Settings) -> None:
    """Deliver until SIGTERM or SIGINT; undelivered events stay in the outbox for the next one."""
    if settings.subscription_delivery_nice:
        os.nice(settings.subscription_delivery_nice)
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
