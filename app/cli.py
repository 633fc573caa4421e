"""``fhir-server``: ``serve`` migrates if needed and runs uvicorn (and the delivery process of
Subscriptions on PostgreSQL), ``migrate`` applies the schema migrations, ``deliver`` runs only the
delivery of Subscription notifications (``app.delivery_worker``), ``client``, ``user`` and ``keys``
manage the authorization server (``app.admin_cli``)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from sqlalchemy.engine import make_url

from app import admin_cli
from app.config import Settings
from app.storage.migrate import upgrade

LOG = logging.getLogger("fhir.cli")


def migrate(settings: Settings) -> bool:
    """Bring the schema up to date; False (with one clear line logged) when the database cannot be reached."""
    try:
        upgrade(settings.database_url)
    except Exception as exc:  # any driver's connection error: report it in one line, no traceback
        shown = make_url(settings.database_url).render_as_string(hide_password=True)
        reason = str(exc).strip().splitlines()[-1][:300] if str(exc).strip() else type(exc).__name__
        LOG.error("cannot migrate the database %s: %s", shown, reason)
        return False
    return True


def serve(settings: Settings) -> None:
    """Migrate (a no-op when the schema is current), then serve in the foreground; SIGTERM/Ctrl-C stop
    accepting and finish in-flight requests."""
    # the server's modules are imported by the commands that run it, so that an operator's
    # ``client``, ``user`` or ``keys`` command starts in a fraction of the time
    import uvicorn

    from app.delivery_supervisor import DeliverySupervisor

    if not migrate(settings):
        raise SystemExit(1)
    delivery = DeliverySupervisor() if settings.delivery_process else None
    if delivery is not None:
        delivery.start()
    try:
        uvicorn.run(
            "app.main:create_app",
            factory=True,
            host=settings.host,
            port=settings.port,
            workers=settings.workers,
            log_level=settings.log_level,
            access_log=False,
            timeout_graceful_shutdown=30,
            loop=event_loop(settings.workers),
            http="httptools",
        )
    finally:
        if delivery is not None:
            delivery.stop()


def event_loop(workers: int) -> str:
    """uvicorn's ``loop``: one worker accepts every waiting connection at once (``app.serving_loop``);
    several share one listening socket, where uvloop's own server, one connection per turn of each
    worker's loop, spreads a burst of connections over them."""
    return "app.serving_loop:new_event_loop" if workers == 1 else "uvloop"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="fhir-server", description="Care plan repository FHIR R4 server")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("serve", help="migrate the schema if needed, then serve the FHIR API (FHIR_* settings)")
    sub.add_parser("migrate", help="apply database migrations up to the newest")
    sub.add_parser("deliver", help="send Subscription notifications only (serve starts one on PostgreSQL)")
    admin_cli.add_parsers(sub)
    args = parser.parse_args(argv)
    settings = Settings()
    logging.basicConfig(level=settings.log_level.upper(), format="%(message)s", stream=sys.stderr)
    if args.command in admin_cli.COMMANDS:
        admin_cli.run(settings, args)
    elif args.command == "migrate":
        if not migrate(settings):
            raise SystemExit(1)
    elif args.command == "deliver":
        from app.delivery_worker import deliver  # (imported only by the command that runs it, as in serve)

        asyncio.run(deliver(settings))
    else:
        serve(settings)


if __name__ == "__main__":
    main()
