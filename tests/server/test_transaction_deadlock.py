"""Transactions that update the same resources in opposite order, against the real server process.

Two Bundles naming the same two resources in opposite entry order would
each lock one row and wait for the other's; PostgreSQL breaks such a cycle by
aborting one transaction (SQLSTATE 40P01). The server takes its locks on the
resources a Bundle names in one fixed order and retries a transaction that the
database could not serialise, so clients see only 200, or 412 when their own
``ifMatch`` names a version that is no longer current
(hl7.org/fhir/R4/http.html#transaction, #concurrency).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.server.process import FHIR, RunningServer

pytestmark = pytest.mark.server
CLIENTS = 20
SECONDS = 6.0


@pytest.fixture
async def http(server: RunningServer) -> AsyncIterator[httpx.AsyncClient]:
    limits = httpx.Limits(max_connections=CLIENTS + 5)
    async with httpx.AsyncClient(base_url=server.base, timeout=60, limits=limits) as client:
        yield client


@dataclass(frozen=True, slots=True)
class Outcome:
    with_if_match: bool
    status: int
    text: str


def task(task_id: str, description: str) -> dict[str, Any]:
    return {"resourceType": "Task", "id": task_id, "status": "requested", "intent": "order", "description": description}


def put(task_id: str, description: str, if_match: str | None) -> dict[str, Any]:
    request: dict[str, Any] = {"method": "PUT", "url": f"Task/{task_id}"}
    if if_match is not None:
        request["ifMatch"] = f'W/"{if_match}"'
    return {"resource": task(task_id, description), "request": request}


async def current_version(http: httpx.AsyncClient, task_id: str) -> str:
    response = await http.get(f"/fhir/Task/{task_id}")
    assert response.status_code == 200, response.text
    return str(response.json()["meta"]["versionId"])


async def history_versions(http: httpx.AsyncClient, task_id: str) -> list[int]:
    versions: list[int] = []
    url: str | None = f"/fhir/Task/{task_id}/_history?_count=1000"
    while url is not None:
        page = (await http.get(url)).json()
        versions.extend(int(e["resource"]["meta"]["versionId"]) for e in page.get("entry", []))
        url = next((link["url"] for link in page.get("link", []) if link["relation"] == "next"), None)
    return sorted(versions)


async def client(http: httpx.AsyncClient, number: int, ids: tuple[str, str], deadline: float) -> list[Outcome]:
    """Alternate the entry order; every fourth Bundle sends ifMatch with the versions just read."""
    outcomes = []
    round_number = 0
    while time.monotonic() < deadline:
        first, second = ids if (number + round_number) % 2 == 0 else ids[::-1]
        with_if_match = round_number % 4 == 3
        versions: dict[str, str | None] = {first: None, second: None}
        if with_if_match:
            versions = {first: await current_version(http, first), second: await current_version(http, second)}
        description = f"client {number} round {round_number}"
        body = {
            "resourceType": "Bundle",
            "type": "transaction",
            "entry": [put(first, description, versions[first]), put(second, description, versions[second])],
        }
        response = await http.post("/fhir", json=body, headers=FHIR)
        outcomes.append(Outcome(with_if_match, response.status_code, response.text))
        round_number += 1
    return outcomes


async def test_transactions_updating_two_resources_in_opposite_order_never_fail(
    server: RunningServer, http: httpx.AsyncClient
) -> None:
    ids: list[str] = []
    for name in ("first", "second"):
        body = {"resourceType": "Task", "status": "requested", "intent": "order", "description": name}
        created = await http.post("/fhir/Task", json=body, headers=FHIR)
        assert created.status_code == 201, created.text
        ids.append(created.json()["id"])
    pair = (ids[0], ids[1])
    deadline = time.monotonic() + SECONDS
    rounds = await asyncio.gather(*(client(http, n, pair, deadline) for n in range(CLIENTS)))
    outcomes = [outcome for batch in rounds for outcome in batch]

    statuses = Counter((o.with_if_match, o.status) for o in outcomes)
    failures = [o for o in outcomes if o.status != 200 and not (o.with_if_match and o.status == 412)]
    assert not failures, f"{statuses}: {failures[0].text}"
    mismatches = [o.text for o in outcomes if o.status == 412]
    assert all("If-Match" in text or "changed by another request" in text for text in mismatches), mismatches[:1]
    succeeded = statuses[(False, 200)] + statuses[(True, 200)]
    assert statuses[(False, 200)] > 0 and succeeded > CLIENTS

    for task_id in pair:
        versions = await history_versions(http, task_id)
        assert versions == list(range(1, succeeded + 2)), (
            f"Task/{task_id}: {len(versions)} versions, {succeeded} updates"
        )
    assert "Traceback" not in server.log()
