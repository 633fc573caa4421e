"""``fhir-server``: ``serve`` runs uvicorn, ``migrate`` applies the schema migrations."""

from __future__ import annotations

import argparse
import logging

import uvicorn

from app.config import Settings
from app.storage.migrate import upgrade


def serve(settings: Settings) -> None:
    """Serve in the foreground; SIGTERM/Ctrl-C stop accepting and finish in-flight requests."""
    uvicorn.run(
        "app.main:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        log_level=settings.log_level,
        access_log=False,
        timeout_graceful_shutdown=30,
        loop="uvloop",
        http="httptools",
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="fhir-server", description="Care plan repository FHIR R4 server")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("serve", help="serve the FHIR API (settings from FHIR_* environment variables)")
    sub.add_parser("migrate", help="apply database migrations up to the newest")
    args = parser.parse_args(argv)
    settings = Settings()
    logging.basicConfig(level=settings.log_level.upper(), format="%(message)s")
    if args.command == "migrate":
        upgrade(settings.database_url)
    else:
        serve(settings)


if __name__ == "__main__":
    main()
