"""Chained criteria judged on the index rows of the resources a write references: the same answers as
the search, one small statement per index table (none when the write reaches no target), and what
memory cannot judge left to the database; on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncConnection

from app.interactions.context import ContextHolder
from app.search.request import parse_search
from app.subscriptions import outbox
from app.subscriptions.chains import chain_checks, judge_chains
from tests.search.test_memory import REGISTRY
from tests.subscriptions.conftest import FHIR_JSON_HEADERS, post, subscribe, task
from tests.subscriptions.test_rest_hook import events_of


def checks_of(criteria: str) -> Any:
    pairs = parse_qsl(criteria, keep_blank_values=True)
    return chain_checks(parse_search("Task", pairs, REGISTRY, 1, 1).clauses)


def test_chains_whose_inner_clause_memory_can_judge_become_chain_checks() -> None:
    family = checks_of("patient.family=doe")
    assert [(c.clause.name, [t for t, _ in c.alternatives]) for c in family] == [("patient.family", ["Patient"])]
    owner = checks_of("owner:Practitioner.name=osei")
    assert [[t for t, _ in c.alternatives] for c in owner] == [["Practitioner"]]
    assert checks_of("patient.identifier=http://x|1&patient.general-practitioner=Practitioner/g1") is not None
    assert checks_of("owner.name:contains=ose") is not None  # every target type with a ``name``


@pytest.mark.parametrize(
    "criteria",
    [
        "patient.family:missing=true",  # would hold for a target that does not exist
        "patient.gender:not=male",  # likewise
        "patient.birthdate=2000",  # dates compare values read back from the database
        "patient.organization.name=acme",  # a chain of chains
        "_has:Task:part-of:status=ready",
        "patient.family=doe&_has:Task:part-of:status=ready",  # one clause the database must judge
    ],
)
def test_other_chains_are_left_to_the_database(criteria: str) -> None:
    assert checks_of(criteria) is None


class AskedOfTheDatabase:
    """The subscriptions whose clauses the outbox asked the database to judge."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.ids: set[str] = set()
        original = outbox._ask_database

        async def asking(conn: Any, resource_type: str, resource_id: str, undecided: Any, checks: Any) -> list[str]:
            self.ids.update(subscription.id for subscription, _ in undecided)
            return await original(conn, resource_type, resource_id, undecided, checks)

        monkeypatch.setattr(outbox, "_ask_database", asking)


JUDGED_ON_TARGETS = [
    "patient.family=doe",
    "patient.name:exact=Doe",
    "patient.name:contains=oe",
    "patient:Patient.identifier=http://example.org/mrn|1",
    "patient.general-practitioner=Practitioner/g1",
    "patient.gender=male&status=requested",
    "patient.family=doe,roe",
    "patient.family=roe",  # with the other lone family chains, one condition of a plain create's veto
    "owner.name=osei",
    "owner.name=nobody",
]
LEFT_TO_THE_DATABASE = ["patient.birthdate:missing=true", "patient.gender:not=male", "patient.birthdate=1970"]


@pytest.mark.parametrize("conditional", [True, False], ids=["in-a-transaction", "plain-creates"])
async def test_chained_subscriptions_notify_exactly_the_writes_their_search_finds(
    client: httpx.AsyncClient, app: FastAPI, monkeypatch: pytest.MonkeyPatch, conditional: bool
) -> None:
    """Each Task is written by a conditional create (in a transaction on both backends: the outbox
    judges it there) or a plain one (on PostgreSQL one statement, which stores the Task only when no
    chain matches it, else the write takes a transaction); a subscription is notified for exactly the
    Tasks its criteria find afterwards."""
    subscriptions = {c: await subscribe(client, f"Task?{c}") for c in JUDGED_ON_TARGETS + LEFT_TO_THE_DATABASE}
    doe = await post(
        client,
        {
            "resourceType": "Patient",
            "name": [{"family": "Doe"}],
            "gender": "male",
            "identifier": [{"system": "http://example.org/mrn", "value": "1"}],
            "generalPractitioner": [{"reference": "Practitioner/g1"}],
        },
    )
    roe = await post(client, {"resourceType": "Patient", "name": [{"family": "Roe"}], "birthDate": "1970-05-01"})
    gone = await post(client, {"resourceType": "Patient", "name": [{"family": "Doe"}], "gender": "male"})
    assert (await client.delete(f"/fhir/Patient/{gone['id']}")).status_code in (200, 204)
    osei = await post(client, {"resourceType": "Practitioner", "name": [{"family": "Osei"}]})
    asked = AskedOfTheDatabase(monkeypatch)
    patients = [f"Patient/{doe['id']}", f"Patient/{roe['id']}", f"Patient/{gone['id']}", "Patient/ghost", None]
    for number, patient in enumerate(patients):
        extra: dict[str, Any] = {"identifier": [{"system": "http://example.org/task", "value": str(number)}]}
        if patient is not None:
            extra["for"] = {"reference": patient}
        owner = f"Practitioner/{osei['id']}" if number % 2 == 0 else "Practitioner/p1"
        condition = {"If-None-Exist": f"identifier=http://example.org/task|{number}"} if conditional else {}
        response = await client.post(
            "/fhir/Task", json=task(owner=owner, **extra), headers=FHIR_JSON_HEADERS | condition
        )
        assert response.status_code == 201, response.text
    found_any = False
    for criteria, subscription_id in subscriptions.items():
        bundle = (await client.get(f"/fhir/Task?{criteria}")).json()
        found = {entry["resource"]["id"] for entry in bundle.get("entry", [])}
        notified = {resource_id for _, resource_id, _, _ in await events_of(app, subscription_id)}
        assert notified == found, criteria
        found_any = found_any or bool(found)
    assert found_any
    # a write that some chain may match takes a transaction, which asks the database the clauses only it
    # can judge (on PostgreSQL a plain create's statement vetoes itself for such a write)
    assert asked.ids == {subscriptions[c] for c in LEFT_TO_THE_DATABASE}


class Statements:
    """Counts the statements run on one connection while installed, those run on its driver under
    SQLAlchemy included: on SQLite its trace callback sees both; on PostgreSQL asyncpg's query logger
    sees the driver's own statements and SQLAlchemy's event the prepared ones it runs."""

    def __init__(self, conn: AsyncConnection) -> None:
        self.sql: list[str] = []
        self._conn = conn
        self._driver: Any = None

    async def __aenter__(self) -> Statements:
        self._driver = (await self._conn.get_raw_connection()).driver_connection
        if self._conn.dialect.name == "postgresql":
            self._driver.add_query_logger(self._logged)
            event.listen(self._conn.sync_engine, "before_cursor_execute", self._executed)
        else:
            await self._driver.set_trace_callback(self.sql.append)
        return self

    async def __aexit__(self, *_: object) -> None:
        if self._conn.dialect.name == "postgresql":
            await asyncio.sleep(0)  # asyncpg hands each logged query over at the loop's next turn
            self._driver.remove_query_logger(self._logged)
            event.remove(self._conn.sync_engine, "before_cursor_execute", self._executed)
        else:
            await self._driver.set_trace_callback(None)

    def _logged(self, record: Any) -> None:
        self.sql.append(record.query)

    def _executed(self, *args: Any) -> None:
        self.sql.append(str(args[2]))


async def test_the_targets_rows_are_read_once_per_table_and_not_at_all_without_targets(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    holder: ContextHolder = app.state.fhir
    patient = await post(client, {"resourceType": "Patient", "name": [{"family": "Family-3"}]})
    pending = [(f"s{n}", checks_of(f"patient.family=family-{n}")) for n in range(10)]
    pending.append(("by-identifier", checks_of("patient.identifier=http://example.org/mrn|1")))
    written = task(**{"for": {"reference": f"Patient/{patient['id']}"}})
    rows = holder.current.index_rows("Task", "t1", written)
    async with holder.current.db.read() as conn:
        async with Statements(conn) as statements:
            assert await judge_chains(conn, rows, pending) == (["s3"], [])
        assert len(statements.sql) == 2  # the string rows and the token rows of the one patient
        assert all("UNION" not in sql for sql in statements.sql)
        async with Statements(conn) as statements:
            assert await judge_chains(conn, holder.current.index_rows("Task", "t2", task()), pending) == ([], [])
        assert statements.sql == []  # no patient referenced: every chain fails without asking


async def test_many_targets_are_read_in_one_statement_too(client: httpx.AsyncClient, app: FastAPI) -> None:
    """Up to four targets are bound one by one, more as one spread list: the answer is the same."""
    holder: ContextHolder = app.state.fhir
    plan = {"resourceType": "CarePlan", "intent": "plan", "subject": {"reference": "Patient/p1"}}
    drafts = [await post(client, {**plan, "status": "draft"}) for _ in range(5)]
    active = await post(client, {**plan, "status": "active"})
    pending = [("active-plan", checks_of("based-on:CarePlan.status=active"))]
    for plans, expected in [(drafts, []), ([*drafts, active], ["active-plan"]), ([active], ["active-plan"])]:
        written = task(basedOn=[{"reference": f"CarePlan/{p['id']}"} for p in plans])
        async with holder.current.db.read() as conn, Statements(conn) as statements:
            assert await judge_chains(conn, holder.current.index_rows("Task", "t1", written), pending) == (
                expected,
                [],
            )
        assert len(statements.sql) == 1
