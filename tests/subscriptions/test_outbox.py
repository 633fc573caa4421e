"""The outbox hook: the events of a write are stored with it, numbered per subscription without gaps,
whether memory settles the match (then, on PostgreSQL, inside the write's single statement) or the
database must help (then inside a write transaction), on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import insert, literal, select

from app import fhirjson
from app.interactions.context import ContextHolder
from app.main import SUBSCRIPTION_WAKE_CHANNEL
from app.storage.repository import StoredVersion
from app.storage.row_keys import NO_KEYS
from app.storage.single_statement import _values, _written_tables, create_statement
from app.storage.writes import Change
from app.subscriptions.outbox import PreparedChecks, SubscriptionOutbox
from app.subscriptions.tables import subscription_events, subscription_state
from tests.subscriptions.conftest import post, subscribe, task
from tests.subscriptions.test_rest_hook import events_of


def outbox_of(app: FastAPI) -> SubscriptionOutbox:
    holder: ContextHolder = app.state.fhir
    return next(hook for hook in holder.current.writer.hooks if isinstance(hook, SubscriptionOutbox))


class CallsInTransaction:
    """Counts the writes for which the outbox was called inside a write transaction."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.types: list[str] = []
        original = SubscriptionOutbox.__call__

        async def counting(outbox: SubscriptionOutbox, conn: Any, change: Change) -> None:
            self.types.append(change.stored.resource_type)
            await original(outbox, conn, change)

        monkeypatch.setattr(SubscriptionOutbox, "__call__", counting)


def change_of(body: dict[str, Any], previous: dict[str, Any] | None = None, deleted: bool = False) -> Change:
    now = datetime.now(UTC)
    before = None
    if previous is not None:
        before = StoredVersion(body["resourceType"], "t1", 1, now, False, fhirjson.dumps(previous), "POST")
    stored = StoredVersion(
        body["resourceType"], "t1", 2 if before else 1, now, deleted, None if deleted else fhirjson.dumps(body), "PUT"
    )
    return Change(before, stored, {})


async def test_writes_memory_settles_carry_their_events_in_their_own_statement(
    client: httpx.AsyncClient, app: FastAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    subscription_id = await subscribe(client, "Task?owner=Practitioner/p1&status=requested")
    calls = CallsInTransaction(monkeypatch)
    created = await post(client, task())
    updated = await client.put(
        f"/fhir/Task/{created['id']}", json={**task(), "id": created["id"], "priority": "urgent"}, headers=_JSON
    )
    assert updated.status_code == 200
    await post(client, task(owner="Practitioner/p2"))  # matches nothing
    assert await events_of(app, subscription_id) == [(1, created["id"], 1, False), (2, created["id"], 2, False)]
    holder: ContextHolder = app.state.fhir
    if holder.current.db.dialect == "postgresql":
        assert calls.types == []  # matched in memory, stored by the write's own statement
    else:
        assert calls.types == ["Task", "Task", "Task"]  # SQLite: each write is a transaction with the hook in it
    e = subscription_events.c
    async with holder.current.db.read() as conn:
        query = select(e.occurred).where(e.subscription_id == subscription_id).order_by(e.event_number)
        occurred = list((await conn.execute(query)).scalars())
    assert occurred[-1] == datetime.fromisoformat(updated.json()["meta"]["lastUpdated"])  # the version's time


async def test_a_chain_is_judged_on_the_stored_targets_within_the_write(
    client: httpx.AsyncClient, app: FastAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    subscription_id = await subscribe(client, "Task?patient.family=doe&status=requested")
    doe = await post(client, {"resourceType": "Patient", "name": [{"family": "Doe"}]})
    roe = await post(client, {"resourceType": "Patient", "name": [{"family": "Roe"}]})
    calls = CallsInTransaction(monkeypatch)
    matching = await post(client, task(**{"for": {"reference": f"Patient/{doe['id']}"}}))
    await post(client, task(**{"for": {"reference": f"Patient/{roe['id']}"}}))  # the chain fails
    await post(client, task(status="accepted", **{"for": {"reference": f"Patient/{doe['id']}"}}))  # fails in memory
    await post(client, task())  # no patient at all
    assert await events_of(app, subscription_id) == [(1, matching["id"], 1, False)]
    if app.state.fhir.current.db.dialect == "postgresql":
        # the chain is a veto of each write's own statement: the write it matches takes a transaction,
        # which numbers the event; the others are stored by their statement
        assert calls.types == ["Task"]
    else:
        assert calls.types == ["Task"] * 4


async def test_chains_through_one_parameter_share_its_targets_and_keep_their_own_values(
    client: httpx.AsyncClient, app: FastAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three subscriptions chain through ``patient`` with different families: one write binds its
    patient once, and only the subscriptions whose family it has are numbered."""
    doe = await subscribe(client, "Task?patient.family=doe")
    roe = await subscribe(client, "Task?patient.family=roe")
    also_doe = await subscribe(client, "Task?patient.name=doe&status=requested")
    patient = await post(client, {"resourceType": "Patient", "name": [{"family": "Doe"}]})
    calls = CallsInTransaction(monkeypatch)
    written = await post(client, task(**{"for": {"reference": f"Patient/{patient['id']}"}}))
    assert await events_of(app, doe) == [(1, written["id"], 1, False)]
    assert await events_of(app, also_doe) == [(1, written["id"], 1, False)]
    assert await events_of(app, roe) == []
    if app.state.fhir.current.db.dialect == "postgresql":
        assert calls.types == ["Task"]  # vetoed by its statement, all three judged by one transaction


async def test_only_a_write_that_stored_events_wakes_the_dispatcher(client: httpx.AsyncClient, app: FastAPI) -> None:
    subscription_id = await subscribe(client, "Task?patient.family=doe&status=requested")
    doe = await post(client, {"resourceType": "Patient", "name": [{"family": "Doe"}]})
    roe = await post(client, {"resourceType": "Patient", "name": [{"family": "Roe"}]})
    outbox = outbox_of(app)
    wakes: list[str] = []
    outbox._wake = lambda: wakes.append("wake")  # the dispatcher's (or the broadcast's) wake-up
    await post(client, task(**{"for": {"reference": f"Patient/{roe['id']}"}}))  # the chain fails in the database
    await post(client, task(status="accepted", **{"for": {"reference": f"Patient/{doe['id']}"}}))  # fails in memory
    assert wakes == []
    matching = await post(client, task(**{"for": {"reference": f"Patient/{doe['id']}"}}))
    assert wakes == ["wake"]
    assert await events_of(app, subscription_id) == [(1, matching["id"], 1, False)]


async def test_a_write_stored_by_one_statement_wakes_the_delivery_process_by_that_statements_notify(
    client: httpx.AsyncClient, app: FastAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a delivery process (PostgreSQL), a notifying write stored by its own statement wakes it by a
    NOTIFY of that statement, sent when it commits: one message however many events it stored, none for
    a write that stored none, and no statement of the worker's after the commit."""
    holder: ContextHolder = app.state.fhir
    if holder.current.db.dialect != "postgresql":
        pytest.skip("SQLite has no delivery process: the worker's dispatcher is woken after the commit")
    first = await subscribe(client, "Task?owner=Practitioner/p1&status=requested")
    second = await subscribe(client, "Task?owner=Practitioner/p1")
    outbox = outbox_of(app)
    after_commit: list[str] = []
    outbox._wake = lambda: after_commit.append("wake")
    calls = CallsInTransaction(monkeypatch)
    heard: list[str] = []
    dsn = holder.current.db.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    listener = await asyncpg.connect(dsn)
    try:
        await listener.add_listener(SUBSCRIPTION_WAKE_CHANNEL, lambda *message: heard.append(message[3]))
        await post(client, task(owner="Practitioner/p2"))  # matches nothing
        matching = await post(client, task())  # matches both
        async with asyncio.timeout(5):
            while "wake" not in heard:
                await asyncio.sleep(0.01)
        await asyncio.sleep(0.2)  # a second message would have come by now
    finally:
        await listener.close()
    assert heard == ["wake"]
    assert after_commit == [] and calls.types == []  # stored and announced by the write's one statement
    assert await events_of(app, first) == await events_of(app, second) == [(1, matching["id"], 1, False)]


async def test_the_statement_finds_the_subscriptions_it_numbers_by_primary_key(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    """Among thousands of subscriptions, the one matched in memory is numbered by its key, and the
    chained one's veto is judged on the targets' index rows, not by reading every subscription's row at
    every write: for a write the chain does not match (stored, one event) and for one it does (vetoed:
    nothing stored, the write takes a transaction)."""
    holder: ContextHolder = app.state.fhir
    if holder.current.db.dialect != "postgresql":
        pytest.skip("SQLite writes in a transaction, not in one statement")
    await subscribe(client, "Task?patient.family=doe&status=requested")
    await subscribe(client, "Task?owner=Practitioner/p1")
    doe = await post(client, {"resourceType": "Patient", "name": [{"family": "Doe"}]})
    roe = await post(client, {"resourceType": "Patient", "name": [{"family": "Roe"}]})
    others = [
        {"subscription_id": f"other-{n}", "active": True, "events_assigned": 0, "delivered_through": 0, "attempts": 0}
        for n in range(1000)
    ]
    async with holder.current.db.write() as conn:
        await conn.execute(insert(subscription_state), others)
        await conn.exec_driver_sql("ANALYZE subscription_state")
    for patient, expected in ((roe, (1, 1)), (doe, (0, 0))):
        body = task(**{"for": {"reference": f"Patient/{patient['id']}"}})
        stored = StoredVersion("Task", "explained", 1, datetime.now(UTC), False, fhirjson.dumps(body), "POST")
        rows = holder.current.index_rows("Task", "explained", body)
        parts = outbox_of(app).settle(Change(None, stored, rows))
        assert parts is not None and len(parts) == 1 and parts[0].veto is not None
        tables = _written_tables(rows)
        statement = create_statement(tables, parts)
        arguments = statement.arguments(_values(stored, rows, tables, parts, NO_KEYS))
        async with holder.current.db.read() as conn:
            driver = (await conn.get_raw_connection()).driver_connection
            assert driver is not None
            transaction = driver.transaction()  # to read this statement's own scan counts, then undo it
            await transaction.start()
            await driver.execute("SET LOCAL plan_cache_mode = force_generic_plan")  # as after five executions
            before = await driver.fetchrow(_SCANS)
            written, events = await driver.fetchrow(statement.sql, *arguments)
            after = await driver.fetchrow(_SCANS)
            plan = await driver.fetch("EXPLAIN " + statement.sql, *arguments)
            await transaction.rollback()
        assert (written, events) == expected  # roe: the Task stored with the owner's event; doe: vetoed
        explained = "\n".join(row[0] for row in plan)
        assert after["seq_scan"] - before["seq_scan"] == 0, explained
        assert after["idx_scan"] - before["idx_scan"] >= expected[1], explained


# The backend's counts of its own transaction. They may also hold a previous transaction's scans on the
# same pooled connection that the statistics collector has not taken yet (it takes them at most once a
# second), so the test reads them before and after the statement and compares the two.
_SCANS = "SELECT seq_scan, idx_scan FROM pg_stat_xact_user_tables WHERE relname = 'subscription_state'"


async def test_has_is_judged_on_the_resources_that_reference_the_written_one(
    client: httpx.AsyncClient, app: FastAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    subscription_id = await subscribe(client, "Patient?_has:Task:patient:status=requested")
    await post(client, task(**{"for": {"reference": "Patient/followed"}}))
    await post(client, task(status="accepted", **{"for": {"reference": "Patient/other"}}))
    calls = CallsInTransaction(monkeypatch)
    for patient_id in ("followed", "other", "nobody"):
        body = {"resourceType": "Patient", "id": patient_id, "name": [{"family": patient_id}]}
        assert (await client.put(f"/fhir/Patient/{patient_id}", json=body, headers=_JSON)).status_code == 201
    assert await events_of(app, subscription_id) == [(1, "followed", 1, False)]
    # on PostgreSQL only the write the _has may match takes a transaction (its statement's veto held)
    expected = ["Patient"] if app.state.fhir.current.db.dialect == "postgresql" else ["Patient"] * 3
    assert calls.types == expected


async def test_criteria_whose_sql_spreads_a_list_at_execution_still_match_through_a_transaction(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    doe = await post(client, {"resourceType": "Patient", "name": [{"family": "Doe"}]})
    subscription_id = await subscribe(client, f"Task?patient._id={doe['id']},other")  # an IN of two ids
    matching = await post(client, task(**{"for": {"reference": f"Patient/{doe['id']}"}}))
    await post(client, task(**{"for": {"reference": "Patient/elsewhere"}}))
    assert await events_of(app, subscription_id) == [(1, matching["id"], 1, False)]


async def test_concurrent_settled_and_transactional_writes_number_without_gaps(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    everything = await subscribe(client, "Task?owner=Practitioner/p1")
    await subscribe(client, "Task?status=accepted&patient.family=doe")  # makes accepted tasks need a query
    doe = await post(client, {"resourceType": "Patient", "name": [{"family": "Doe"}]})
    subject = {"for": {"reference": f"Patient/{doe['id']}"}}
    bodies = [task(status="requested" if n % 2 else "accepted", **subject) for n in range(40)]
    created = await asyncio.gather(*(post(client, body) for body in bodies))
    events = await events_of(app, everything)
    assert [number for number, *_ in events] == list(range(1, 41))
    assert sorted(resource_id for _, resource_id, _, _ in events) == sorted(r["id"] for r in created)


async def test_writes_notifying_the_same_subscriptions_by_both_paths_number_each_without_gaps(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    """Deletions (matched on the removed version, so written in a transaction) and creates (in their
    own statement on PostgreSQL) at once, each notifying the same three subscriptions: both paths lock
    the state rows in the order of their ids, and every subscription gets each event once, numbered
    without gaps."""
    shared = [await subscribe(client, criteria) for criteria in ("Task?owner=Practitioner/p1", "Task?intent=order")]
    shared.append(await subscribe(client, "Task?status=requested,accepted"))
    first = [await post(client, task()) for _ in range(12)]
    deletes = [client.delete(f"/fhir/Task/{created['id']}") for created in first]
    creates = [client.post("/fhir/Task", json=task(), headers=_JSON) for _ in range(12)]
    responses = await asyncio.gather(*deletes, *creates)
    assert sorted(response.status_code for response in responses) == [200] * 12 + [201] * 12
    for subscription_id in shared:
        events = await events_of(app, subscription_id)
        assert [number for number, *_ in events] == list(range(1, 37))
        assert sum(1 for *_, deleted in events if deleted) == 12


async def test_a_statement_that_loses_a_race_numbers_nothing(client: httpx.AsyncClient, app: FastAPI) -> None:
    subscription_id = await subscribe(client, "Task?owner=Practitioner/p1")
    body = {**task(), "id": "raced"}
    puts = await asyncio.gather(*(client.put("/fhir/Task/raced", json=body, headers=_JSON) for _ in range(12)))
    assert sorted(r.status_code for r in puts) == [200] * 11 + [201]
    # every statement that lost (id taken, version moved) wrote nothing and took no number
    assert await events_of(app, subscription_id) == [(n, "raced", n, False) for n in range(1, 13)]


async def test_settle_leaves_to_a_transaction_what_memory_cannot_decide(app: FastAPI) -> None:
    outbox = outbox_of(app)
    patient = change_of({"resourceType": "Patient"})
    assert outbox.settle(patient) is None  # the view of Subscriptions has not been read yet
    async with app.state.fhir.current.db.read() as conn:
        await outbox.active.load(conn)
    subscription = {"resourceType": "Subscription", "status": "off", "reason": "r", "criteria": "Task?status=ready"}
    assert outbox.settle(change_of(subscription)) is None  # its bookkeeping needs the database
    assert outbox.settle(change_of(task(), task(), deleted=True)) is None  # matched on the removed version
    assert outbox.settle(patient) == ()  # no subscription: nothing to add


_JSON = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}


def test_the_union_of_the_same_prepared_checks_is_built_once() -> None:
    """SQLAlchemy computes a statement's cache key once per object: the same checks reuse one union."""
    first, second = select(literal("a")), select(literal("b"))
    checks = PreparedChecks()
    union = checks.union([first, second])
    assert checks.union([first, second]) is union
    assert checks.union([second, first]) is not union  # another order, another statement
    assert checks.union([first]) is first  # one check is its own statement
    again = select(literal("a"))  # a changed Subscription brings new check objects
    assert checks.union([again, second]) is not union
