"""Shared fixtures: every storage test runs on SQLite and on PostgreSQL.

PostgreSQL comes from ``FHIR_TEST_POSTGRES_URL`` (a server URL; each test
session creates its own database there) or from a throw-away cluster started
here. When neither is possible the PostgreSQL tests are skipped with a loud
warning, except under ``CI=true``, where that is an error. The number of
PostgreSQL tests that ran is added to ``.pytest-postgres-count`` so
``.ci/run`` can refuse a run in which that leg silently did not happen
(``make test`` removes the file, then runs the parallel part and the
tests marked ``alone``, each adding its count).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import uuid
import warnings
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from app.config import Settings
from app.main import create_app
from app.storage.migrate import upgrade
from app.storage.tables import metadata
from tests.postgres_cluster import Cluster, PostgresUnavailable, start_cluster

ROOT = Path(__file__).resolve().parents[1]
BACKENDS = ["sqlite", "postgresql"]
TEST_BASE_URL = "http://testserver/fhir"
PG_COUNT_FILE = ROOT / ".pytest-postgres-count"
_pg_passed = 0


def _pg_count_so_far() -> int:
    """The count an earlier session of the same ``make test`` wrote (it runs pytest twice and removes
    the file first)."""
    try:
        return int(PG_COUNT_FILE.read_text().strip() or 0)
    except (OSError, ValueError):
        return 0


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


async def _admin(url: str, statement: str) -> None:
    engine = create_async_engine(url, isolation_level="AUTOCOMMIT")
    async with engine.connect() as conn:
        await conn.execute(text(statement))
    await engine.dispose()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """Admin URL of a PostgreSQL server (external or throw-away)."""
    external = os.environ.get("FHIR_TEST_POSTGRES_URL")
    if external:
        yield external
        return
    cluster: Cluster | None = None
    try:
        cluster = start_cluster()
    except PostgresUnavailable as exc:
        message = f"PostgreSQL tests cannot run: {exc}"
        if in_ci():
            pytest.exit(message, returncode=3)
        warnings.warn(message, stacklevel=1)
        print(f"\n!!! {message} -- SKIPPING THE POSTGRESQL LEG !!!\n")
        pytest.skip(message)
    assert cluster is not None
    yield cluster.admin_url
    cluster.stop()


def _with_database(admin_url: str, database: str) -> str:
    return admin_url.rsplit("/", 1)[0] + f"/{database}"


@pytest.fixture(scope="session")
def postgres_template(postgres_server: str) -> str:
    """A migrated PostgreSQL database shared by the session (tables truncated per test)."""
    name = f"fhir_test_{uuid.uuid4().hex[:8]}"
    asyncio.run(_admin(postgres_server, f'CREATE DATABASE "{name}"'))
    url = _with_database(postgres_server, name)
    upgrade(url)
    return url


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sqlite-template") / "fhir.sqlite"
    upgrade(f"sqlite+aiosqlite:///{path}")
    return path


async def truncate(url: str) -> None:
    engine = create_async_engine(url)
    async with engine.begin() as conn:
        names = ", ".join(table.name for table in metadata.sorted_tables)
        await conn.execute(text(f"TRUNCATE {names}"))
    await engine.dispose()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def database_url(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A migrated, empty database of the test's backend."""
    if backend == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        target = tmp_path / "fhir.sqlite"
        shutil.copyfile(template, target)
        return f"sqlite+aiosqlite:///{target}"
    url: str = request.getfixturevalue("postgres_template")
    asyncio.run(truncate(url))
    return url


@pytest.fixture
def settings(database_url: str) -> Settings:
    """FHIR behaviour is tested without authorization; tests/smart and tests/api/test_auth.py test it on."""
    return Settings(database_url=database_url, base_url=TEST_BASE_URL, log_level="warning", auth="off")


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[FastAPI]:
    application = create_app(settings)
    yield application
    await application.state.jobs.close()  # background jobs a test left running (their rows stay resumable)
    await application.state.subscriptions.close()  # messages still being sent
    await application.state.fhir.current.db.dispose()


def empty_values(node: Any, path: str = "$") -> list[str]:
    """Where a JSON document holds null, {}, [] or "" (json.html forbids them in FHIR JSON, except a null
    in a primitive array whose ``_name`` array carries that position)."""
    if node is None or node == {} or node == [] or node == "":
        return [path]
    found: list[str] = []
    if isinstance(node, dict):
        for key, value in node.items():
            carried = node.get(f"_{key}")
            if isinstance(value, list) and isinstance(carried, list):
                for index, item in enumerate(value):
                    if item is None and index < len(carried) and carried[index] is not None:
                        continue
                    found += empty_values(item, f"{path}.{key}[{index}]")
            elif key.startswith("_") and isinstance(value, list):
                bases = node.get(key[1:])
                for index, item in enumerate(value):
                    if item is None and isinstance(bases, list) and index < len(bases) and bases[index] is not None:
                        continue
                    found += empty_values(item, f"{path}.{key}[{index}]")
            else:
                found += empty_values(value, f"{path}.{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += empty_values(value, f"{path}[{index}]")
    return found


async def check_fhir_json_response(response: httpx.Response) -> None:
    """Every FHIR JSON answer of the server obeys the rules it enforces on clients."""
    if "json" not in response.headers.get("content-type", ""):
        return
    body = await response.aread()
    if not body:
        return
    found = empty_values(json.loads(body))
    assert not found, f"{response.request.method} {response.request.url}: null/empty values at {found[:5]}"


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    hooks = {"response": [check_fhir_json_response]}
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver", event_hooks=hooks) as http:
        yield http


FHIR_JSON_HEADERS = {"Content-Type": "application/fhir+json"}


def pytest_runtest_logreport(report: Any) -> None:
    global _pg_passed
    if report.when == "call" and report.passed and "postgresql" in report.nodeid:
        _pg_passed += 1


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if os.environ.get("PYTEST_XDIST_WORKER"):
        return  # a worker of ``-n``: the controlling process receives every report and writes the count
    PG_COUNT_FILE.write_text(f"{_pg_count_so_far() + _pg_passed}\n")
    if _pg_passed == 0 and session.testscollected:
        print("\n!!! No PostgreSQL test ran in this session !!!")
