"""Authorization across server processes: what one worker revokes, every worker refuses within the poll.

``fhir-server serve`` with two uvicorn workers and authorization on (as shipped): a token verified
by both workers is revoked through one request; after ``FHIR_AUTH_REVOCATION_POLL_SECONDS`` every
request with it, whichever worker answers, is 401. A rotated signing key likewise reaches both.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.server.process import BIN, RunningServer, start_server, stop_server

pytestmark = pytest.mark.server
SECRET = "worker test secret"


@pytest.fixture
def two_workers(database_url: str, tmp_path: Path) -> Iterator[tuple[RunningServer, dict[str, str]]]:
    settings = {"FHIR_WORKERS": "2", "FHIR_AUTH_REVOCATION_POLL_SECONDS": "1"}
    running = start_server(database_url, tmp_path / "server.log", auth=True, settings=settings)
    env = {**os.environ, "FHIR_DATABASE_URL": database_url}
    try:
        yield running, env
    finally:
        stop_server(running)


def token(running: RunningServer) -> str:
    answer = httpx.post(
        f"{running.base}/smart/token",
        data={"grant_type": "client_credentials", "scope": "system/*.rs"},
        auth=("ops", SECRET),
    )
    assert answer.status_code == 200, answer.text
    return str(answer.json()["access_token"])


def statuses(running: RunningServer, bearer: str, count: int = 20) -> set[int]:
    """Statuses of ``count`` reads on fresh connections (so both workers answer some)."""
    return {
        httpx.get(f"{running.base}/fhir/CarePlan", headers={"Authorization": f"Bearer {bearer}"}).status_code
        for _ in range(count)
    }


def test_a_revocation_and_a_key_rotation_reach_every_worker(two_workers: tuple[RunningServer, dict[str, str]]) -> None:
    running, env = two_workers
    register = ["client", "add", "--client-id", "ops", "--type", "confidential-symmetric", "--secret", SECRET,
                "--scope", "system/*.rs"]  # fmt: skip
    done = subprocess.run([str(BIN / "fhir-server"), *register], env=env, capture_output=True, text=True)
    assert done.returncode == 0 and json.loads(done.stdout)["client_id"] == "ops", done.stderr
    first = token(running)
    assert statuses(running, first) == {200}
    revoked = httpx.post(f"{running.base}/smart/revoke", data={"token": first}, auth=("ops", SECRET))
    assert revoked.status_code == 200
    time.sleep(2.5)  # more than one poll interval
    assert statuses(running, first) == {401}
    rotated = subprocess.run([str(BIN / "fhir-server"), "keys", "rotate"], env=env, capture_output=True, text=True)
    assert rotated.returncode == 0, rotated.stderr
    time.sleep(2.5)
    second = token(running)  # signed by whichever worker with the new key...
    assert json.loads(rotated.stdout)["kid"] in httpx.get(f"{running.base}/smart/jwks").text
    assert statuses(running, second) == {200}  # ...and verified by both
