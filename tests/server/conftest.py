"""A fresh real server per test, on the test's backend (so each log holds one test's requests)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.server.process import RunningServer, start_server, stop_server


@pytest.fixture
def server(database_url: str, tmp_path: Path) -> Iterator[RunningServer]:
    running = start_server(database_url, tmp_path / "server.log")
    yield running
    stop_server(running)
