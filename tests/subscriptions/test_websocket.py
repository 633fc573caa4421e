"""The websocket channel's protocols on the hub, on SQLite and PostgreSQL (where events travel through
NOTIFY): R4's bind, bound, ping per event; the Backport IG's bind-with-token, handshake, a notification
Bundle per event and heartbeats; refusals. The route itself, with authorization and
across two server processes, is tested in tests/server/test_subscription_processes.py."""

from __future__ import annotations

import asyncio
import json
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
from tests.subscriptions.test_backport import status_of, topic_subscription


@pytest.fixture
async def hub(app: FastAPI) -> AsyncIterator[WebSocketHub]:
    subscriptions: Subscriptions = app.state.subscriptions
    await subscriptions.hub.start()
    yield subscriptions.hub
    await subscriptions.hub.close()


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
        ("hello", "error the server understands 'bind [subscription id]' and 'bind-with-token [token]'"),
        ("bind", "error the server understands 'bind [subscription id]' and 'bind-with-token [token]'"),
        ("bind-with-token nope", "error the token is not known or has expired"),
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


async def topic_websocket(
    client: httpx.AsyncClient, content: str = "full-resource", heartbeat: int | None = None
) -> str:
    body = topic_subscription("task-assigned", "Task?owner=Practitioner/p1", content=content, heartbeat=heartbeat)
    channel = body["channel"]
    body["channel"] = {"type": "websocket", "payload": "application/fhir+json", "_payload": channel["_payload"]}
    if "extension" in channel:
        body["channel"]["extension"] = channel["extension"]
    response = await client.post("/fhir/Subscription", json=body, headers=FHIR_JSON_HEADERS)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def binding_token(client: httpx.AsyncClient, subscription_id: str) -> str:
    response = await client.post(f"/fhir/Subscription/{subscription_id}/$get-ws-binding-token")
    assert response.status_code == 200, response.text
    return str(next(p["valueString"] for p in response.json()["parameter"] if p["name"] == "token"))


async def test_bind_with_token_gets_a_handshake_then_a_bundle_per_event(
    client: httpx.AsyncClient, hub: WebSocketHub, delivery: Delivery
) -> None:
    subscription_id = await topic_websocket(client)
    session = Session(None)  # no access token on the connection: the binding token stands for it
    await hub.handle(session, f"bind {subscription_id}")
    assert (await next_message(session)).startswith("error bind needs an access token")
    await hub.handle(session, f"bind-with-token {await binding_token(client, subscription_id)}")
    handshake = json.loads(await next_message(session))
    assert status_of(handshake)["type"] == "handshake"
    assert status_of(handshake)["subscription"]["reference"].endswith(f"/Subscription/{subscription_id}")
    first = await post(client, task())
    await post(client, task(owner="Practitioner/p2"))  # filtered out
    second = await post(client, task())
    await delivery.round()
    bundles = [json.loads(await next_message(session)), json.loads(await next_message(session))]
    assert [status_of(b)["type"] for b in bundles] == ["event-notification"] * 2
    assert [status_of(b)["notification-event"][0]["event-number"] for b in bundles] == ["1", "2"]
    assert [b["entry"][1]["resource"] for b in bundles] == [first, second]
    assert delivery.receiver.requests == []


async def test_a_quiet_topic_websocket_gets_heartbeats(client: httpx.AsyncClient, hub: WebSocketHub) -> None:
    subscription_id = await topic_websocket(client, content="empty", heartbeat=1)
    session = Session(UNRESTRICTED)
    await hub.handle(session, f"bind-with-token {await binding_token(client, subscription_id)}")
    assert status_of(json.loads(await next_message(session)))["type"] == "handshake"
    heartbeat = json.loads(await next_message(session))
    assert status_of(heartbeat)["type"] == "heartbeat"
    assert status_of(heartbeat)["events-since-subscription-start"] == "0"


async def test_a_token_binds_only_while_its_subscription_is_active(
    client: httpx.AsyncClient, hub: WebSocketHub
) -> None:
    subscription_id = await topic_websocket(client)
    token = await binding_token(client, subscription_id)
    current = (await client.get(f"/fhir/Subscription/{subscription_id}")).json()
    await client.put(
        f"/fhir/Subscription/{subscription_id}", json={**current, "status": "off"}, headers=FHIR_JSON_HEADERS
    )
    session = Session(None)
    await hub.handle(session, f"bind-with-token {token}")
    assert await next_message(session) == f"error Subscription/{subscription_id} is not active"
