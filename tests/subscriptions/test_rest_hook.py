"""R4 criteria Subscriptions over rest-hook, end to end through the API, on SQLite and PostgreSQL:
acceptance, matching at every kind of write, the requests R4 prescribes, order, retry and error."""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import timedelta

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import event, func, select, update

from app.interactions.context import ContextHolder, utc_now
from app.subscriptions.delivery_statements import CLAIM, DUE
from app.subscriptions.tables import subscription_attempts, subscription_events, subscription_state
from tests.conftest import FHIR_JSON_HEADERS
from tests.subscriptions.conftest import (
    ENDPOINT,
    Delivery,
    Receiver,
    make_dispatcher,
    post,
    subscribe,
    subscription,
    task,
)


async def events_of(app: FastAPI, subscription_id: str) -> list[tuple[int, str, int, bool]]:
    holder: ContextHolder = app.state.fhir
    e = subscription_events.c
    async with holder.current.db.read() as conn:
        rows = await conn.execute(
            select(e.event_number, e.resource_id, e.version_id, e.deleted)
            .where(e.subscription_id == subscription_id)
            .order_by(e.event_number)
        )
        return [tuple(row) for row in rows]  # type: ignore[misc]


async def test_a_requested_subscription_is_stored_active(client: httpx.AsyncClient) -> None:
    subscription_id = await subscribe(client, "Task?owner=Practitioner/p1&status=requested")
    stored = (await client.get(f"/fhir/Subscription/{subscription_id}")).json()
    assert stored["status"] == "active"
    assert stored["criteria"] == "Task?owner=Practitioner/p1&status=requested"


@pytest.mark.parametrize(
    ("change", "element", "says"),
    [
        ({"criteria": "Task?no-such-parameter=1"}, "Subscription.criteria", "no-such-parameter"),
        ({"criteria": "Task?authored-on=yesterday"}, "Subscription.criteria", "authored-on"),
        ({"criteria": "Nothing?status=x"}, "Subscription.criteria", "not a resource type"),
        ({"criteria": "Task?status=requested&_sort=date"}, "Subscription.criteria", "_sort"),
        ({"channel": {"type": "email", "endpoint": "mailto:a@b.org"}}, "Subscription.channel.type", "rest-hook"),
        ({"channel": {"type": "rest-hook"}}, "Subscription.channel.endpoint", "URL"),
        (
            {"channel": {"type": "rest-hook", "endpoint": "http://hooks.example.org/x"}},
            "Subscription.channel.endpoint",
            "https",
        ),
        (
            {"channel": {"type": "rest-hook", "endpoint": "https://10.1.2.3/x"}},
            "Subscription.channel.endpoint",
            "private",
        ),
        (
            {"channel": {"type": "rest-hook", "endpoint": "https://169.254.169.254/latest/meta-data"}},
            "Subscription.channel.endpoint",
            "link-local",
        ),
        (
            {"channel": {"type": "rest-hook", "endpoint": "https://user:secret@hooks.example.org/x"}},
            "Subscription.channel.endpoint",
            "credentials",
        ),
        (
            {"channel": {"type": "rest-hook", "endpoint": ENDPOINT, "payload": "application/fhir+xml"}},
            "Subscription.channel.payload",
            "application/fhir+json",
        ),
        (
            {"channel": {"type": "rest-hook", "endpoint": ENDPOINT, "header": ["Host: evil.example.org"]}},
            "Subscription.channel.header[0]",
            "Host",
        ),
        (
            {"channel": {"type": "rest-hook", "endpoint": ENDPOINT, "header": ["no colon"]}},
            "Subscription.channel.header[0]",
            "Name: value",
        ),
        *(
            (
                {"channel": {"type": "rest-hook", "endpoint": ENDPOINT, "header": [f"X-Note: {value}"]}},
                "Subscription.channel.header[0]",
                says,
            )
            for value, says in (
                ("a\r\nSet-Cookie: x=1", "printable ASCII"),
                ("a\u0001b", "control characters"),  # refused in every string of every resource
                ("a\u007fb", "printable ASCII"),
                ("caf\u00e9", "printable ASCII"),
            )
        ),
        (
            {"channel": {"type": "rest-hook", "endpoint": ENDPOINT, "header": ["X-Big: " + "b" * 9000]}},
            "Subscription.channel.header[0]",
            "at most 8192 characters",
        ),
        (
            {"channel": {"type": "rest-hook", "endpoint": ENDPOINT, "header": [f"X-{n}: v" for n in range(51)]}},
            "Subscription.channel.header",
            "at most 50 headers",
        ),
        ({"criteria": "Task?authored-on=\u0662\u0660\u0662\u0666"}, "Subscription.criteria", "not a valid date"),
    ],
)
async def test_an_unusable_subscription_is_refused_naming_the_element(
    client: httpx.AsyncClient, change: dict[str, object], element: str, says: str
) -> None:
    body = {**subscription("Task?status=requested"), **change}
    response = await client.post("/fhir/Subscription", json=body, headers=FHIR_JSON_HEADERS)
    assert response.status_code == 400, response.text
    issue = response.json()["issue"][0]
    assert issue["expression"] == [element]
    assert says in issue["diagnostics"]
    assert (await client.get("/fhir/Subscription")).json().get("total", 0) == 0


async def test_an_off_subscription_is_stored_as_written_and_not_checked(client: httpx.AsyncClient) -> None:
    body = {**subscription("Task?status=requested"), "status": "off"}
    response = await client.post("/fhir/Subscription", json=body, headers=FHIR_JSON_HEADERS)
    assert response.status_code == 201
    assert response.json()["status"] == "off"


async def test_writes_that_match_become_numbered_events_and_others_do_not(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    subscription_id = await subscribe(client, "Task?owner=Practitioner/p1&status=requested")
    first = await post(client, task())
    await post(client, task(owner="Practitioner/p2"))  # another owner
    await post(client, task(status="accepted"))  # another status
    await post(
        client,
        {"resourceType": "CarePlan", "status": "active", "intent": "plan", "subject": {"reference": "Patient/x"}},
    )
    updated = await client.put(
        f"/fhir/Task/{first['id']}", json={**task(), "id": first["id"], "priority": "urgent"}, headers=FHIR_JSON_HEADERS
    )
    assert updated.status_code == 200
    patched = await client.patch(
        f"/fhir/Task/{first['id']}",
        content=json.dumps([{"op": "replace", "path": "/status", "value": "accepted"}]),
        headers={"Content-Type": "application/json-patch+json"},
    )
    assert patched.status_code == 200  # no longer requested: no event
    assert await events_of(app, subscription_id) == [(1, first["id"], 1, False), (2, first["id"], 2, False)]


async def test_every_write_path_notifies(client: httpx.AsyncClient, app: FastAPI) -> None:
    subscription_id = await subscribe(client, "Task?owner=Practitioner/p1")
    created = await post(client, task())
    conditional = await client.put(
        "/fhir/Task?identifier=urn:t|1",
        json={**task(), "identifier": [{"system": "urn:t", "value": "1"}]},
        headers=FHIR_JSON_HEADERS,
    )
    assert conditional.status_code == 201
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"fullUrl": "urn:uuid:1", "resource": task(), "request": {"method": "POST", "url": "Task"}},
            {"resource": task(priority="stat"), "request": {"method": "POST", "url": "Task"}},
        ],
    }
    assert (await client.post("/fhir", json=bundle, headers=FHIR_JSON_HEADERS)).status_code == 200
    batch = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [{"request": {"method": "DELETE", "url": f"Task/{created['id']}"}}],
    }
    assert (await client.post("/fhir", json=batch, headers=FHIR_JSON_HEADERS)).status_code == 200
    events = await events_of(app, subscription_id)
    assert [number for number, *_ in events] == [1, 2, 3, 4, 5]
    assert events[-1] == (5, created["id"], 2, True)  # the deletion, matched on the version it removed


async def test_a_write_that_rolls_back_leaves_no_event(client: httpx.AsyncClient, app: FastAPI) -> None:
    subscription_id = await subscribe(client, "Task?owner=Practitioner/p1")
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": task(), "request": {"method": "POST", "url": "Task"}},
            {"resource": {**task(), "id": "x1"}, "request": {"method": "PUT", "url": "Task/x1", "ifMatch": 'W/"7"'}},
        ],
    }
    response = await client.post("/fhir", json=bundle, headers=FHIR_JSON_HEADERS)
    assert response.status_code == 412
    assert await events_of(app, subscription_id) == []
    created = await post(client, task())
    assert await events_of(app, subscription_id) == [(1, created["id"], 1, False)]  # numbering did not skip


async def test_criteria_the_rows_cannot_settle_are_asked_of_the_database(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    subscription_id = await subscribe(client, "Task?patient.family=doe&status=requested")
    doe = await post(client, {"resourceType": "Patient", "name": [{"family": "Doe"}]})
    roe = await post(client, {"resourceType": "Patient", "name": [{"family": "Roe"}]})
    matching = await post(client, task(**{"for": {"reference": f"Patient/{doe['id']}"}}))
    await post(client, task(**{"for": {"reference": f"Patient/{roe['id']}"}}))
    await post(client, task(status="accepted", **{"for": {"reference": f"Patient/{doe['id']}"}}))
    assert await events_of(app, subscription_id) == [(1, matching["id"], 1, False)]


async def test_without_payload_each_event_is_an_empty_post_in_order(
    client: httpx.AsyncClient, delivery: Delivery
) -> None:
    subscription_id = await subscribe(
        client, "Task?owner=Practitioner/p1", header=["Authorization: Bearer hook-secret"]
    )
    for _ in range(5):
        await post(client, task())
    await delivery.round()
    requests = delivery.receiver.requests
    assert [r.method for r in requests] == ["POST"] * 5
    assert {str(r.url) for r in requests} == {ENDPOINT}
    assert all(r.content == b"" for r in requests)
    assert all(r.headers["Authorization"] == "Bearer hook-secret" for r in requests)
    assert delivery.receiver.event_ids == [f"{subscription_id}/{n}" for n in range(1, 6)]
    state = await delivery.state(subscription_id)
    assert (state.delivered_through, state.events_assigned, state.lease_owner) == (5, 5, None)


async def test_with_payload_the_resource_is_put_and_a_deletion_is_a_delete(
    client: httpx.AsyncClient, delivery: Delivery
) -> None:
    await subscribe(client, "Task?owner=Practitioner/p1", payload="application/fhir+json")
    created = await post(client, task())
    assert (await client.delete(f"/fhir/Task/{created['id']}")).status_code in (200, 204)
    await delivery.round()
    put, deleted = delivery.receiver.requests
    assert (put.method, str(put.url)) == ("PUT", f"{ENDPOINT}/Task/{created['id']}")
    assert put.headers["Content-Type"] == "application/fhir+json"
    sent = json.loads(put.content)
    assert (sent["id"], sent["meta"]["versionId"], sent["status"]) == (created["id"], "1", "requested")
    assert (deleted.method, str(deleted.url)) == ("DELETE", f"{ENDPOINT}/Task/{created['id']}")


async def test_a_failing_endpoint_is_retried_with_backoff_and_keeps_the_order(
    client: httpx.AsyncClient, delivery: Delivery, app: FastAPI
) -> None:
    subscription_id = await subscribe(client, "Task?owner=Practitioner/p1")
    await post(client, task())
    await post(client, task())
    delivery.receiver.script = [503, 500, 503]
    for expected_delay in (1, 2, 4):  # the first retry within 5 s, doubling
        before = utc_now()
        await delivery.round()
        after = utc_now()
        state = await delivery.state(subscription_id)
        # the delay counts from the failed attempt, somewhere between before and after
        earliest = before + timedelta(seconds=expected_delay)
        latest = after + timedelta(seconds=expected_delay)
        assert earliest <= state.retry_at <= latest, (state.retry_at - before, expected_delay)
        await delivery.round()  # not due yet: nothing is sent
        await _make_due(app, subscription_id)
    await delivery.round()
    assert delivery.receiver.event_ids == [f"{subscription_id}/1"] * 4 + [f"{subscription_id}/2"]
    state = await delivery.state(subscription_id)
    assert (state.delivered_through, state.attempts, state.last_error) == (2, 0, None)
    holder: ContextHolder = app.state.fhir
    async with holder.current.db.read() as conn:
        a = subscription_attempts.c
        rows = list(await conn.execute(select(a.event_number, a.delivered, a.detail).order_by(a.attempt_id)))
    assert [tuple(r) for r in rows] == [
        (1, False, "HTTP 503"),
        (1, False, "HTTP 500"),
        (1, False, "HTTP 503"),
        (1, True, "HTTP 200"),
        (2, True, "HTTP 200"),
    ]


async def _make_due(app: FastAPI, subscription_id: str) -> None:
    """Time passes: the retry is due now."""
    holder: ContextHolder = app.state.fhir
    async with holder.current.db.write() as conn:
        await conn.execute(
            update(subscription_state)
            .where(subscription_state.c.subscription_id == subscription_id)
            .values(retry_at=utc_now() - timedelta(seconds=1))
        )


async def test_after_the_retry_horizon_the_subscription_is_error_and_stops(
    client: httpx.AsyncClient, app: FastAPI, caplog: pytest.LogCaptureFixture
) -> None:
    receiver = Receiver(script=[503] * 10)
    dispatcher = make_dispatcher(app, receiver, retry_hours=1 / 3600)  # one second
    subscription_id = await subscribe(client, "Task?owner=Practitioner/p1", header=["X-Api-Key: very-secret"])
    await post(client, task())
    with caplog.at_level(logging.WARNING, logger="fhir.subscriptions"):
        await dispatcher.start_due()
        await dispatcher.drain()
        holder: ContextHolder = app.state.fhir
        async with holder.current.db.write() as conn:  # the first failure was over a second ago
            await conn.execute(
                update(subscription_state)
                .where(subscription_state.c.subscription_id == subscription_id)
                .values(failing_since=utc_now() - timedelta(seconds=2), retry_at=None)
            )
        await dispatcher.start_due()
        await dispatcher.drain()
    stored = (await client.get(f"/fhir/Subscription/{subscription_id}")).json()
    assert stored["status"] == "error"
    assert "HTTP 503" in stored["error"]
    assert "very-secret" not in caplog.text
    assert f"Subscription/{subscription_id} is now error" in caplog.text
    await post(client, task())
    state = await _state(app, subscription_id)
    assert (state.active, state.events_assigned) == (False, 1)  # no new events while in error
    await dispatcher.close()


async def _state(app: FastAPI, subscription_id: str) -> object:
    holder: ContextHolder = app.state.fhir
    async with holder.current.db.read() as conn:
        return (
            await conn.execute(
                select(subscription_state).where(subscription_state.c.subscription_id == subscription_id)
            )
        ).one()


async def test_off_stops_events_and_active_again_resumes_them(client: httpx.AsyncClient, app: FastAPI) -> None:
    subscription_id = await subscribe(client, "Task?owner=Practitioner/p1")
    body = (await client.get(f"/fhir/Subscription/{subscription_id}")).json()
    await post(client, task())
    off = await client.put(
        f"/fhir/Subscription/{subscription_id}", json={**body, "status": "off"}, headers=FHIR_JSON_HEADERS
    )
    assert off.status_code == 200
    await post(client, task())
    again = await client.put(
        f"/fhir/Subscription/{subscription_id}", json={**body, "status": "requested"}, headers=FHIR_JSON_HEADERS
    )
    assert again.json()["status"] == "active"
    third = await post(client, task())
    events = await events_of(app, subscription_id)
    assert [(n, rid) for n, rid, *_ in events][-1] == (2, third["id"])
    assert len(events) == 2


async def test_two_dispatchers_deliver_each_event_once_in_order(client: httpx.AsyncClient, app: FastAPI) -> None:
    receiver = Receiver()
    first, second = make_dispatcher(app, receiver), make_dispatcher(app, receiver)
    ids = [await subscribe(client, "Task?owner=Practitioner/p1") for _ in range(3)]
    for _ in range(10):
        await post(client, task())
    for _ in range(3):
        await first.start_due()
        await second.start_due()
        await first.drain()
        await second.drain()
    for subscription_id in ids:
        mine = [e for e in receiver.event_ids if e.startswith(f"{subscription_id}/")]
        assert mine == [f"{subscription_id}/{n}" for n in range(1, 11)]
    assert len(receiver.event_ids) == 30
    await first.close()
    await second.close()


async def test_an_ended_subscription_is_turned_off(client: httpx.AsyncClient, app: FastAPI, delivery: Delivery) -> None:
    body = subscription("Task?owner=Practitioner/p1")
    body["end"] = (utc_now() + timedelta(seconds=1)).isoformat().replace("+00:00", "Z")
    response = await client.post("/fhir/Subscription", json=body, headers=FHIR_JSON_HEADERS)
    subscription_id = response.json()["id"]
    await post(client, task())
    holder: ContextHolder = app.state.fhir
    async with holder.current.db.read() as conn:
        assert (await conn.execute(select(func.count()).select_from(subscription_events))).scalar_one() == 1
    await asyncio.sleep(1.1)
    await delivery.round()
    assert (await client.get(f"/fhir/Subscription/{subscription_id}")).json()["status"] == "off"


async def test_old_attempt_records_are_pruned(client: httpx.AsyncClient, app: FastAPI, delivery: Delivery) -> None:
    subscription_id = await subscribe(client, "Task?owner=Practitioner/p1")
    await post(client, task())
    await post(client, task())
    await delivery.round()
    holder: ContextHolder = app.state.fhir
    a = subscription_attempts.c
    async with holder.current.db.write() as conn:  # the first attempt was eight days ago
        await conn.execute(
            update(subscription_attempts)
            .where(a.subscription_id == subscription_id, a.event_number == 1)
            .values(attempted=utc_now() - timedelta(days=8))
        )
    assert await delivery.dispatcher.prune_attempts() == 1
    async with holder.current.db.read() as conn:
        left = [
            row[0] for row in await conn.execute(select(a.event_number).where(a.subscription_id == subscription_id))
        ]
    assert left == [2]


async def test_a_subscription_passed_over_while_its_task_finished_is_delivered_without_waiting_for_the_poll(
    client: httpx.AsyncClient, app: FastAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    receiver = Receiver()
    dispatcher = make_dispatcher(app, receiver, poll_seconds=60.0)
    subscription_id = await subscribe(client, "Task?owner=Practitioner/p1")
    finishing: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    delivered = asyncio.Event()
    deliver_all = dispatcher._deliver_all

    async def slow_to_end(subscription: str) -> None:
        await deliver_all(subscription)  # delivers, records, gives the lease back
        delivered.set()
        await finishing  # ... and the task has not ended yet when the next event's wake-up comes

    monkeypatch.setattr(dispatcher, "_deliver_all", slow_to_end)
    await post(client, task())
    running = asyncio.create_task(dispatcher.run())
    # until the task has given the lease back, not only sent event 1: an event committed before the
    # task recorded the first would still be its to deliver (it keeps a lease while events wait)
    async with asyncio.timeout(2):
        await delivered.wait()
    assert receiver.event_ids == [f"{subscription_id}/1"]
    await post(client, task())
    dispatcher.wake()
    await asyncio.sleep(0.3)
    assert receiver.event_ids == [f"{subscription_id}/1"]  # passed over: its task is still here
    finishing.set_result(None)
    for _ in range(40):
        if len(receiver.event_ids) == 2:
            break
        await asyncio.sleep(0.05)
    assert receiver.event_ids == [f"{subscription_id}/1", f"{subscription_id}/2"]  # not a minute later
    running.cancel()
    await asyncio.gather(running, return_exceptions=True)
    await dispatcher.close()


async def test_a_wake_up_with_nothing_in_flight_claims_at_once_and_a_poll_reads_first(
    client: httpx.AsyncClient, app: FastAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A wake-up follows a write that committed events: with no delivery task in flight here the round
    claims without the read of what is due (one statement less per notification); a round of the poll,
    not woken, reads first (an idle server takes no write lock)."""
    receiver = Receiver()
    dispatcher = make_dispatcher(app, receiver, poll_seconds=60.0)
    subscription_id = await subscribe(client, "Task?owner=Practitioner/p1")
    engine = app.state.fhir.current.db.engine
    due = " ".join(str(DUE.compile(dialect=engine.dialect)).split())
    claim = " ".join(str(CLAIM.compile(dialect=engine.dialect)).split()).split("__[POSTCOMPILE")[0]
    executed: list[str] = []

    def claimed(statements: list[str]) -> bool:  # (the claim's list of subscriptions in flight varies)
        return any(statement.startswith(claim) for statement in statements)

    def record(_conn: object, _cursor: object, statement: str, *_: object) -> None:
        executed.append(" ".join(statement.split()))

    rounds: asyncio.Queue[None] = asyncio.Queue()
    start_due = dispatcher.start_due

    async def round_then_tell() -> None:
        await start_due()
        await dispatcher.drain()
        rounds.put_nowait(None)

    monkeypatch.setattr(dispatcher, "start_due", round_then_tell)
    db = app.state.fhir.current.db
    engines = {db.engine.sync_engine, db.write_engine.sync_engine}  # reads, and writes (SQLite: the writer's)
    for sync_engine in engines:
        event.listen(sync_engine, "before_cursor_execute", record)
    try:
        running = asyncio.create_task(dispatcher.run())
        async with asyncio.timeout(5):
            await rounds.get()  # the first round: not woken
        assert due in executed and not claimed(executed)  # nothing was due: read, no lock taken
        await post(client, task())
        executed.clear()
        dispatcher.wake()
        async with asyncio.timeout(5):
            await rounds.get()
        assert receiver.event_ids == [f"{subscription_id}/1"]
        assert claimed(executed) and due not in executed
    finally:
        for sync_engine in engines:
            event.remove(sync_engine, "before_cursor_execute", record)
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
        await dispatcher.close()


@pytest.mark.parametrize("passes", [0, 1, 2, 3])
async def test_the_dispatcher_stops_when_cancelled_just_after_a_wake_up(
    app: FastAPI, monkeypatch: pytest.MonkeyPatch, passes: int
) -> None:
    """A write's wake-up a few loop passes before shutdown cancels the dispatcher: the cancellation is
    not lost (``asyncio.wait_for`` on Python 3.11 returned the finished wait instead, and the loop went
    on, so ``Subscriptions.close`` waited for it forever)."""
    dispatcher = make_dispatcher(app, Receiver(), poll_seconds=60.0)
    looked = asyncio.Event()
    start_due = dispatcher.start_due

    async def look_then_tell() -> None:
        await start_due()
        looked.set()  # the loop now waits for a wake-up, with nothing in between

    monkeypatch.setattr(dispatcher, "start_due", look_then_tell)
    running = asyncio.create_task(dispatcher.run())
    await looked.wait()
    dispatcher.wake()
    for _ in range(passes):
        await asyncio.sleep(0)
    running.cancel()
    done, _ = await asyncio.wait({running}, timeout=5)
    assert done == {running} and running.cancelled()
    await dispatcher.close()


async def test_a_hanging_endpoint_delays_only_its_own_subscriptions(client: httpx.AsyncClient, app: FastAPI) -> None:
    """Each subscription is delivered by its own task, with a cap of requests in flight per host: five
    subscriptions whose host never answers (more than its cap) hold up neither another host's
    subscription nor each other's record; when the host answers, they are delivered too."""
    answered = asyncio.Event()
    arrived: list[str] = []

    async def receiver(request: httpx.Request) -> httpx.Response:
        if request.url.host == "localhost":
            await answered.wait()
        arrived.append(f"{request.url.host} {request.headers['X-Event-Id']}")
        return httpx.Response(200)

    dispatcher = make_dispatcher(app, receiver, poll_seconds=60.0)
    hanging = [
        await subscribe(client, "Task?owner=Practitioner/p1", endpoint="http://localhost:9/hooks") for _ in range(5)
    ]
    prompt = await subscribe(client, "Task?owner=Practitioner/p1")  # on 127.0.0.1
    await post(client, task())
    await dispatcher.start_due()
    async with asyncio.timeout(5):
        while not arrived:
            await asyncio.sleep(0.01)
    assert arrived == [f"127.0.0.1 {prompt}/1"]
    answered.set()
    await dispatcher.drain()
    assert sorted(arrived[1:]) == sorted(f"localhost {sid}/1" for sid in hanging)
    await dispatcher.close()
