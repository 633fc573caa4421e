"""A receiving endpoint for rest-hooks (httpx ``MockTransport``: the network seam) and a dispatcher
that sends to it, on the app of each test."""

from __future__ import annotations

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


def make_dispatcher(app: FastAPI, receiver: Callable[[httpx.Request], httpx.Response], **settings: Any) -> Dispatcher:
    subscriptions: Subscriptions = app.state.subscriptions
    client = httpx.AsyncClient(transport=httpx.MockTransport(receiver))
    settings.setdefault("base_url", app.state.settings.public_base_url)
    return Dispatcher(
        app.state.fhir, subscriptions.active, EndpointPolicy(), client, DeliverySettings(**settings), subscriptions.hub
    )


@pytest.fixture
async def delivery(app: FastAPI) -> AsyncIterator[Delivery]:
    receiver = Receiver()
    dispatcher = make_dispatcher(app, receiver)
    yield Delivery(app, receiver, dispatcher)
    await dispatcher.close()


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
