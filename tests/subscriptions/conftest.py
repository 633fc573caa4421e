"""A receiving endpoint for rest-hooks (httpx ``MockTransport`` behind the dispatcher's ``Sender``: the
network seam) and a dispatcher that sends to it, on the app of each test. The server's own sender is
tested against a real HTTP server in test_sender.py."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from app.interactions.context import ContextHolder
from app.subscriptions.dispatcher import DeliverySettings, Dispatcher
from app.subscriptions.endpoints import EndpointPolicy
from app.subscriptions.rest_hook import Outcome
from app.subscriptions.sender import answered
from app.subscriptions.service import Subscriptions
from app.subscriptions.tables import subscription_state
from tests.conftest import FHIR_JSON_HEADERS

ENDPOINT = "http://127.0.0.1:9/hooks"


@dataclass
class Receiver:
    """Records every request; answers with the next status of ``script`` (then 200)."""

    requests: list[httpx.Request] = field(default_factory=list)
    script: list[int] = field(default_factory=list)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        status = self.script.pop(0) if self.script else 200
        return httpx.Response(status)

    @property
    def event_ids(self) -> list[str]:
        return [r.headers["X-Event-Id"] for r in self.requests]


@dataclass
class Delivery:
    app: FastAPI
    receiver: Receiver
    dispatcher: Dispatcher
    sender: ReceiverSender

    async def round(self) -> None:
        """One dispatcher round, waited for: claim what is due and deliver it."""
        await self.dispatcher.start_due()
        await self.dispatcher.drain()

    async def state(self, subscription_id: str) -> Any:
        holder: ContextHolder = self.app.state.fhir
        async with holder.current.db.read() as conn:
            return (
                await conn.execute(
                    select(subscription_state).where(subscription_state.c.subscription_id == subscription_id)
                )
            ).one()


class ReceiverSender:
    """The dispatcher's ``Sender`` in tests: each request goes to ``receiver`` through httpx's
    ``MockTransport``, and its answer is judged as the server's sender judges one."""

    def __init__(self, receiver: Callable[[httpx.Request], httpx.Response]) -> None:
        self._client = httpx.AsyncClient(transport=httpx.MockTransport(receiver))
        self.timeouts: list[float] = []  # the seconds each request was given

    async def send(self, request: httpx.Request, timeout: float) -> Outcome:
        started = time.monotonic()
        self.timeouts.append(timeout)
        response = await self._client.send(request, follow_redirects=False)
        return answered(response.status_code, response.headers.get("Location"), started)

    async def aclose(self) -> None:
        await self._client.aclose()


def make_dispatcher(
    app: FastAPI,
    receiver: Callable[[httpx.Request], httpx.Response],
    sender: ReceiverSender | None = None,
    **settings: Any,
) -> Dispatcher:
    subscriptions: Subscriptions = app.state.subscriptions
    sender = sender or ReceiverSender(receiver)
    settings.setdefault("base_url", app.state.settings.public_base_url)
    return Dispatcher(
        app.state.fhir, subscriptions.active, EndpointPolicy(), sender, DeliverySettings(**settings), subscriptions.hub
    )


@pytest.fixture
async def delivery(app: FastAPI) -> AsyncIterator[Delivery]:
    receiver = Receiver()
    sender = ReceiverSender(receiver)
    dispatcher = make_dispatcher(app, receiver, sender)
    yield Delivery(app, receiver, dispatcher, sender)
    await dispatcher.close()
    await sender.aclose()


def subscription(criteria: str, payload: str | None = None, **channel: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "resourceType": "Subscription",
        "status": "requested",
        "reason": "care team follow-up",
        "criteria": criteria,
        "channel": {"type": "rest-hook", "endpoint": ENDPOINT, **channel},
    }
    if payload is not None:
        body["channel"]["payload"] = payload
    return body


async def subscribe(client: httpx.AsyncClient, criteria: str, payload: str | None = None, **channel: Any) -> str:
    response = await client.post(
        "/fhir/Subscription", json=subscription(criteria, payload, **channel), headers=FHIR_JSON_HEADERS
    )
    assert response.status_code == 201, response.text
    assert response.json()["status"] == "active"
    return str(response.json()["id"])


def task(status: str = "requested", owner: str | None = "Practitioner/p1", **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"resourceType": "Task", "status": status, "intent": "order", **extra}
    if owner is not None:
        body["owner"] = {"reference": owner}
    return body


async def post(client: httpx.AsyncClient, body: dict[str, Any]) -> dict[str, Any]:
    response = await client.post(f"/fhir/{body['resourceType']}", json=body, headers=FHIR_JSON_HEADERS)
    assert response.status_code == 201, response.text
    return dict(response.json())
