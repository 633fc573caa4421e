"""With SMART on, a Subscription notifies only of what the token that wrote it may read: a patient app
subscribes within its patient's compartment, granular scopes narrow it, and a token that may not read
the watched type cannot subscribe to it (hl7.org/fhir/smart-app-launch/scopes-and-launch-context.html)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from app.api.auth import issuer
from app.config import Settings
from app.main import create_app
from app.smart.tokens import issue_access_token
from tests.api.test_auth import backend_token, bearer, register, signed_token
from tests.conftest import FHIR_JSON_HEADERS, TEST_BASE_URL
from tests.subscriptions.conftest import subscription, task
from tests.subscriptions.test_backport import topic_subscription
from tests.subscriptions.test_rest_hook import events_of


@pytest.fixture
async def secured(database_url: str) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """A server with authorization on (the default)."""
    application = create_app(Settings(database_url=database_url, base_url=TEST_BASE_URL, log_level="warning"))
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            yield application, http


async def write(http: httpx.AsyncClient, token: str, body: dict[str, Any]) -> httpx.Response:
    return await http.post(f"/fhir/{body['resourceType']}", json=body, headers={**FHIR_JSON_HEADERS, **bearer(token)})


async def system_token(app: FastAPI, http: httpx.AsyncClient) -> str:
    await register(app, "care-backend", "system/*.cruds")
    return await backend_token(http, "care-backend", "system/*.cruds")


async def test_a_patient_app_is_notified_only_within_its_patients_compartment(
    secured: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    app, http = secured
    system = await system_token(app, http)
    patient_app = signed_token(app, "patient/Task.rs user/Subscription.cruds", patient="p1")
    created = await write(http, patient_app, subscription("Task?status=requested"))
    assert created.status_code == 201, created.text
    subscription_id = created.json()["id"]
    own = (await write(http, system, task(**{"for": {"reference": "Patient/p1"}}))).json()
    other = (await write(http, system, task(**{"for": {"reference": "Patient/p2"}}))).json()
    unlinked = (await write(http, system, task())).json()
    assert (await http.delete(f"/fhir/Task/{other['id']}", headers=bearer(system))).status_code in (200, 204)
    assert (await http.delete(f"/fhir/Task/{unlinked['id']}", headers=bearer(system))).status_code in (200, 204)
    assert (await http.delete(f"/fhir/Task/{own['id']}", headers=bearer(system))).status_code in (200, 204)
    assert [(n, rid, deleted) for n, rid, _, deleted in await events_of(app, subscription_id)] == [
        (1, own["id"], False),
        (2, own["id"], True),
    ]


async def test_granular_scopes_narrow_what_notifies(secured: tuple[FastAPI, httpx.AsyncClient]) -> None:
    app, http = secured
    system = await system_token(app, http)
    narrowed = signed_token(app, "user/Task.rs?owner=Practitioner/p1 user/Subscription.cruds")
    created = await write(http, narrowed, subscription("Task?status=requested"))
    assert created.status_code == 201, created.text
    mine = (await write(http, system, task(owner="Practitioner/p1"))).json()
    await write(http, system, task(owner="Practitioner/p2"))
    assert [rid for _, rid, _, _ in await events_of(app, created.json()["id"])] == [mine["id"]]


async def test_a_token_that_cannot_read_the_watched_type_cannot_subscribe_to_it(
    secured: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    app, http = secured
    token = signed_token(app, "user/CarePlan.rs user/Subscription.cruds")
    refused = await write(http, token, subscription("Task?status=requested"))
    assert refused.status_code == 403
    assert "Task" in refused.json()["issue"][0]["diagnostics"]
    listed = await http.get("/fhir/Subscription", headers=bearer(token))
    assert listed.json().get("total", len(listed.json().get("entry", []))) == 0
    allowed = await write(http, token, subscription("CarePlan?status=active"))
    assert allowed.status_code == 201


async def test_without_subscription_scopes_nothing_is_subscribed(secured: tuple[FastAPI, httpx.AsyncClient]) -> None:
    app, http = secured
    token = signed_token(app, "user/Task.rs")
    refused = await write(http, token, subscription("Task?status=requested"))
    assert refused.status_code == 403
    assert "Subscription" in refused.json()["issue"][0]["diagnostics"]


async def test_a_patient_apps_topic_subscription_stays_within_its_compartment(
    secured: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    app, http = secured
    system = await system_token(app, http)
    patient_app = signed_token(app, "patient/Task.rs user/Subscription.cruds", patient="p1")
    created = await write(http, patient_app, topic_subscription("task-assigned"))
    assert created.status_code == 201, created.text
    own = (await write(http, system, task(**{"for": {"reference": "Patient/p1"}}))).json()
    await write(http, system, task(**{"for": {"reference": "Patient/p2"}}))
    await write(http, system, task())
    assert [rid for _, rid, _, _ in await events_of(app, created.json()["id"])] == [own["id"]]
    no_tasks = signed_token(app, "user/CarePlan.rs user/Subscription.cruds")
    refused = await write(http, no_tasks, topic_subscription("task-assigned"))
    assert refused.status_code == 403


async def test_only_the_writer_of_a_topic_websocket_gets_its_resources(
    secured: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    app, http = secured
    owner = signed_token(app, "user/Task.rs user/Subscription.cruds")
    body = topic_subscription("task-assigned", content="id-only")
    body["channel"] = {"type": "websocket", "payload": "application/fhir+json", "_payload": body["channel"]["_payload"]}
    created = await write(http, owner, body)
    assert created.status_code == 201, created.text
    operation = f"/fhir/Subscription/{created.json()['id']}/$get-ws-binding-token"
    assert (await http.post(operation, headers=bearer(owner))).status_code == 200
    settings: Settings = app.state.settings
    other, _ = issue_access_token(
        app.state.auth.verifier.keys, issuer(settings), settings.public_base_url, "another-app", "user/*.rs", 300
    )
    refused = await http.post(operation, headers=bearer(other))
    assert refused.status_code == 403
    assert "client that wrote it" in refused.json()["issue"][0]["diagnostics"]
