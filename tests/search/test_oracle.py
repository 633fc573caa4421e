"""Property test: SQL search returns exactly the ids an independent in-memory evaluator returns.

Random Tasks and random queries (hypothesis); the oracle below reads the JSON
directly with its own, deliberately simple logic and shares no code with
app/search. Runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
from datetime import date, timedelta
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete

from app.config import Settings
from app.main import create_app
from app.storage.index_tables import INDEX_TABLES
from app.storage.tables import resource_history, resources
from tests.conftest import FHIR_JSON_HEADERS, TEST_BASE_URL

STATUSES = ["requested", "accepted", "in-progress", "completed", "cancelled"]
PRIORITIES = ["routine", "urgent", "asap", "stat"]
PATIENTS = ["Patient/p1", "Patient/p2", "Patient/p3"]
OWNERS = ["Practitioner/n1", "Practitioner/n2", "Organization/o1"]
DAYS = [date(2026, 1, 1) + timedelta(days=n) for n in (0, 1, 7, 30)]
PREFIXES = ["eq", "ne", "gt", "lt", "ge", "le", "sa", "eb"]


@st.composite
def tasks(draw: st.DrawFn) -> dict[str, Any]:
    task: dict[str, Any] = {"resourceType": "Task", "status": draw(st.sampled_from(STATUSES)), "intent": "order"}
    if draw(st.booleans()):
        task["priority"] = draw(st.sampled_from(PRIORITIES))
    if draw(st.booleans()):
        task["for"] = {"reference": draw(st.sampled_from(PATIENTS))}
    if draw(st.booleans()):
        task["owner"] = {"reference": draw(st.sampled_from(OWNERS))}
    if draw(st.booleans()):
        task["authoredOn"] = draw(st.sampled_from(DAYS)).isoformat()
    if draw(st.booleans()):
        task["identifier"] = [
            {"system": draw(st.sampled_from(["urn:a", "urn:b"])), "value": draw(st.sampled_from("xyz"))}
        ]
    return task


Clause = tuple[str, str]
date_clauses = st.tuples(st.sampled_from(PREFIXES), st.sampled_from(DAYS)).map(
    lambda p: ("authored-on", p[0] + p[1].isoformat())
)
clauses = st.one_of(
    date_clauses,
    st.lists(st.sampled_from(STATUSES), min_size=1, max_size=2, unique=True).map(lambda v: ("status", ",".join(v))),
    st.sampled_from(STATUSES).map(lambda v: ("status:not", v)),
    st.sampled_from(PRIORITIES).map(lambda v: ("priority", v)),
    st.booleans().map(lambda v: ("priority:missing", str(v).lower())),
    st.sampled_from(PATIENTS).map(lambda v: ("patient", v)),
    st.sampled_from(OWNERS).map(lambda v: ("owner", v)),
    st.tuples(st.sampled_from(PREFIXES), st.sampled_from(DAYS)).map(lambda p: ("authored-on", p[0] + p[1].isoformat())),
    st.tuples(st.sampled_from(["urn:a|", "urn:b|", "", "|"]), st.sampled_from("xyz")).map(
        lambda p: ("identifier", p[0] + p[1])
    ),
)


def _ref(task: dict[str, Any], key: str) -> str | None:
    return task.get(key, {}).get("reference")


def _date_matches(prefix: str, value: date | None, wanted: date) -> bool:
    if value is None:
        return False
    return {
        "eq": value == wanted,
        "ne": value != wanted,
        "gt": value > wanted,
        "lt": value < wanted,
        "ge": value >= wanted,
        "le": value <= wanted,
        "sa": value > wanted,
        "eb": value < wanted,
    }[prefix]


def oracle_matches(task: dict[str, Any], name: str, value: str) -> bool:
    if name == "status":
        return task["status"] in value.split(",")
    if name == "status:not":
        return task["status"] != value
    if name == "priority":
        return task.get("priority") == value
    if name == "priority:missing":
        return ("priority" not in task) == (value == "true")
    if name == "patient":
        return _ref(task, "for") == value
    if name == "owner":
        return _ref(task, "owner") == value
    if name == "authored-on":
        authored = date.fromisoformat(task["authoredOn"]) if "authoredOn" in task else None
        return _date_matches(value[:2], authored, date.fromisoformat(value[2:]))
    if name == "identifier":
        system, _, code = value.rpartition("|") if "|" in value else (None, "", value)
        for identifier in task.get("identifier", []):
            if identifier["value"] != code:
                continue
            if system is None or (system == "" and "system" not in identifier) or identifier.get("system") == system:
                return True
        return False
    raise AssertionError(name)


async def _scenario(app: Any, data: list[dict[str, Any]], queries: list[list[Clause]]) -> None:
    db = app.state.fhir.current.db
    async with db.write() as conn:
        for table in [*INDEX_TABLES.values(), resource_history, resources]:
            await conn.execute(delete(table))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        for index, task in enumerate(data):
            body = {**task, "id": f"t{index}"}
            assert (await client.put(f"/fhir/Task/t{index}", json=body, headers=FHIR_JSON_HEADERS)).status_code == 201
        for query in queries:
            expected = sorted(
                f"t{i}" for i, task in enumerate(data) if all(oracle_matches(task, n, v) for n, v in query)
            )
            found: list[str] = []
            url: str | None = "/fhir/Task?" + str(httpx.QueryParams([*query, ("_count", "4")]))
            while url:
                bundle = (await client.get(url)).json()
                assert bundle["resourceType"] == "Bundle", bundle
                found += [e["resource"]["id"] for e in bundle.get("entry", [])]
                nxt = [link["url"] for link in bundle["link"] if link["relation"] == "next"]
                url = "/fhir" + nxt[0][len(TEST_BASE_URL) :] if nxt else None
            assert sorted(found) == expected, query
    await db.dispose()  # each example runs in its own event loop


@pytest.fixture
def oracle_app(database_url: str) -> Any:
    return create_app(Settings(database_url=database_url, base_url=TEST_BASE_URL, log_level="warning", auth="off"))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    data=st.lists(tasks(), min_size=0, max_size=14),
    queries=st.lists(st.lists(clauses, min_size=1, max_size=3), min_size=1, max_size=4),
)
def test_sql_search_equals_in_memory_oracle(
    oracle_app: Any, data: list[dict[str, Any]], queries: list[list[Clause]]
) -> None:
    asyncio.run(_scenario(oracle_app, data, queries))
