"""The R4 websocket channel's protocol on the hub, on SQLite and PostgreSQL (where the ping travels
through NOTIFY): bind, bound, ping per event, and refusals. The route itself, with authorization and
across two server processes, is tested in tests/server/test_subscription_processes.py."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from app.interactions.request_context import UNRESTRICTED, Caller
from app.smart.scopes import parse_permissions
from app.subscriptions.service import Subscriptions
from app.subscriptions.websocket import Session, WebSocketHub
from tests.conftest import FHIR_JSON_HEADERS
from tests.subscriptions.conftest import Delivery, post, subscription, task


@pytest.fixture
async def hub(app: FastAPI) -> AsyncIterator[WebSocketHub]:
    subscriptions: Subscriptions = app.state.subscriptions
    await subscriptions.hub.broadcast.start()
    yield subscriptions.hub
    await subscriptions.hub.broadcast.close()


async def websocket_subscription(client: httpx.AsyncClient, criteria: str = "Task?owner=Practitioner/p1") -> str:
    body = subscription(criteria)
    body["channel"] = {"type": "websocket"}
    response = await client.post("/fhir/Subscription", json=body, headers=FHIR_JSON_HEADERS)
    assert response.status_code == 201, response.text
    assert response.json()["status"] == "active"
    return str(response.json()["id"])


async def next_message(session: Session) -> str:
    return await asyncio.wait_for(session.outgoing.get(), timeout=10)


async def test_bind_then_a_ping_per_event(client: httpx.AsyncClient, hub: WebSocketHub, delivery: Delivery) -> None:
    subscription_id = await websocket_subscription(client)
    session = Session(UNRESTRICTED)
    await hub.handle(session, f"bind {subscription_id}")
    assert await next_message(session) == f"bound {subscription_id}"
    await post(client, task())
    await post(client, task(owner="Practitioner/p2"))  # not matching
    await post(client, task())
    await delivery.round()
    assert [await next_message(session), await next_message(session)] == [f"ping {subscription_id}"] * 2
    assert session.outgoing.empty()
    assert delivery.receiver.requests == []  # nothing went over HTTP
    state = await delivery.state(subscription_id)
    assert state.delivered_through == 2


async def test_a_session_that_left_gets_nothing(
    client: httpx.AsyncClient, hub: WebSocketHub, delivery: Delivery
) -> None:
    subscription_id = await websocket_subscription(client)
    staying, leaving = Session(UNRESTRICTED), Session(UNRESTRICTED)
    for session in (staying, leaving):
        await hub.handle(session, f"bind {subscription_id}")
        await next_message(session)
    hub.drop(leaving)
    await post(client, task())
    await delivery.round()
    assert await next_message(staying) == f"ping {subscription_id}"
    await asyncio.sleep(0.2)
    assert leaving.outgoing.empty()


@pytest.mark.parametrize(
    ("message", "answer"),
    [
        ("hello", "error the server understands 'bind [subscription id]'"),
        ("bind", "error the server understands 'bind [subscription id]'"),
        ("bind nosuchid", "error Subscription/nosuchid is not known"),
        ("bind " + "x" * 300, "error Subscription/" + "x" * 64 + " is not known"),
        ("bind a\0b", "error Subscription/a\0b is not known"),
    ],
)
async def test_what_cannot_be_bound_is_an_error(hub: WebSocketHub, message: str, answer: str) -> None:
    session = Session(UNRESTRICTED)
    await hub.handle(session, message)
    assert await next_message(session) == answer
    assert session.bound == set()


async def test_only_websocket_subscriptions_bind(client: httpx.AsyncClient, hub: WebSocketHub) -> None:
    response = await client.post(
        "/fhir/Subscription", json=subscription("Task?status=requested"), headers=FHIR_JSON_HEADERS
    )
    rest_hook = response.json()["id"]
    session = Session(UNRESTRICTED)
    await hub.handle(session, f"bind {rest_hook}")
    assert await next_message(session) == f"error Subscription/{rest_hook} does not use the websocket channel"


async def test_a_caller_who_may_not_read_the_subscription_cannot_bind_it(
    client: httpx.AsyncClient, hub: WebSocketHub
) -> None:
    subscription_id = await websocket_subscription(client)
    no_subscriptions = Caller.with_token("app", parse_permissions("user/Task.rs"), None, None)
    session = Session(no_subscriptions)
    await hub.handle(session, f"bind {subscription_id}")
    assert await next_message(session) == f"error Subscription/{subscription_id} is not known"


async def test_the_capability_statement_tells_where_and_how(client: httpx.AsyncClient) -> None:
    rest = (await client.get("/fhir/metadata")).json()["rest"][0]
    websocket = [e["valueUri"] for e in rest["extension"] if e["url"].endswith("capabilitystatement-websocket")]
    assert websocket == ["ws://testserver/fhir/websocket"]
    subscription = next(r for r in rest["resource"] if r["type"] == "Subscription")
    for promise in ("rest-hook", "websocket", "application/fhir+json", "X-Event-Id", "at least once"):
        assert promise in subscription["documentation"]
