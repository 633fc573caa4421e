"""Topic-based Subscriptions (Subscriptions Backport IG 1.1) over rest-hook, end to end through the API, on
SQLite and PostgreSQL: acceptance, handshake, each topic's trigger and filters, the notification Bundle for
each payload content, heartbeats."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import update

from app.interactions.context import ContextHolder, utc_now
from app.subscriptions.backport import BACKPORT, FILTER_CRITERIA, HEARTBEAT_PERIOD, PAYLOAD_CONTENT, PROFILE, TIMEOUT
from app.subscriptions.tables import subscription_state
from app.subscriptions.topics import load_topics
from tests.conftest import FHIR_JSON_HEADERS, TEST_BASE_URL
from tests.subscriptions.conftest import ENDPOINT, Delivery, post, task

TOPICS = load_topics()
ACT = "http://terminology.hl7.org/CodeSystem/v3-ActCode"


def topic_url(name: str) -> str:
    found = TOPICS.by_name(name)
    assert found is not None
    return found.url


def topic_subscription(
    name: str, *filters: str, content: str | None = "id-only", heartbeat: int | None = None, **channel: Any
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "resourceType": "Subscription",
        "meta": {"profile": [PROFILE]},
        "status": "requested",
        "reason": "care team follow-up",
        "criteria": topic_url(name),
        "channel": {"type": "rest-hook", "endpoint": ENDPOINT, "payload": "application/fhir+json", **channel},
    }
    if filters:
        body["_criteria"] = {"extension": [{"url": FILTER_CRITERIA, "valueString": f} for f in filters]}
    if content is not None:
        body["channel"]["_payload"] = {"extension": [{"url": PAYLOAD_CONTENT, "valueCode": content}]}
    if heartbeat is not None:
        body["channel"]["extension"] = [{"url": HEARTBEAT_PERIOD, "valueUnsignedInt": heartbeat}]
    return body


async def subscribe(client: httpx.AsyncClient, name: str, *filters: str, **options: Any) -> str:
    response = await client.post(
        "/fhir/Subscription", json=topic_subscription(name, *filters, **options), headers=FHIR_JSON_HEADERS
    )
    assert response.status_code == 201, response.text
    assert response.json()["status"] == "active"
    return str(response.json()["id"])


def bundles(delivery: Delivery) -> list[dict[str, Any]]:
    return [json.loads(r.content) for r in delivery.receiver.requests]


def status_of(bundle: dict[str, Any]) -> dict[str, Any]:
    """The status Parameters as a dict of name -> value (notification-event: list of part dicts)."""
    parameters = bundle["entry"][0]["resource"]
    found: dict[str, Any] = {"notification-event": []}
    for parameter in parameters["parameter"]:
        name = parameter["name"]
        if name == "notification-event":
            found[name].append({p["name"]: next(v for k, v in p.items() if k != "name") for p in parameter["part"]})
        else:
            found[name] = next(v for k, v in parameter.items() if k != "name")
    return found


def foci_by_subscription(delivery: Delivery) -> dict[str, list[str]]:
    """Subscription id -> the ids of the resources its notifications were about, in order."""
    found: dict[str, list[str]] = {}
    for bundle in bundles(delivery):
        status = status_of(bundle)
        subscription_id = status["subscription"]["reference"].rsplit("/", 1)[1]
        found.setdefault(subscription_id, []).extend(
            event["focus"]["reference"].rsplit("/", 1)[1] for event in status["notification-event"]
        )
    return found


async def update_body(client: httpx.AsyncClient, body: dict[str, Any]) -> dict[str, Any]:
    response = await client.put(f"/fhir/{body['resourceType']}/{body['id']}", json=body, headers=FHIR_JSON_HEADERS)
    assert response.status_code == 200, response.text
    return dict(response.json())


async def handshaken(client: httpx.AsyncClient, delivery: Delivery, name: str, *filters: str, **options: Any) -> str:
    """A subscription whose handshake was delivered (the receiver's log cleared after it)."""
    subscription_id = await subscribe(client, name, *filters, **options)
    await delivery.round()
    assert [status_of(b)["type"] for b in bundles(delivery)] == ["handshake"]
    delivery.receiver.requests.clear()
    return subscription_id


async def test_the_handshake_comes_first_and_says_who_and_what(client: httpx.AsyncClient, delivery: Delivery) -> None:
    subscription_id = await subscribe(client, "task-assigned", "Task?owner=Practitioner/p1")
    await post(client, task())
    await delivery.round()
    first, second = bundles(delivery)
    assert first["type"] == "history"
    assert first["meta"]["profile"] == [BACKPORT + "backport-subscription-notification-r4"]
    assert len(first["entry"]) == 1
    entry = first["entry"][0]
    assert entry["request"] == {"method": "GET", "url": f"{TEST_BASE_URL}/Subscription/{subscription_id}/$status"}
    assert entry["resource"]["meta"]["profile"] == [BACKPORT + "backport-subscription-status-r4"]
    assert status_of(first) == {
        "subscription": {"reference": f"{TEST_BASE_URL}/Subscription/{subscription_id}"},
        "topic": topic_url("task-assigned"),
        "status": "active",
        "type": "handshake",
        "events-since-subscription-start": "1",  # the Task was written before the handshake went out
        "notification-event": [],
    }
    assert status_of(second)["type"] == "event-notification"
    assert "X-Event-Id" not in delivery.receiver.requests[0].headers
    assert delivery.receiver.requests[1].headers["X-Event-Id"] == f"{subscription_id}/1"
    assert all(r.method == "POST" and str(r.url) == ENDPOINT for r in delivery.receiver.requests)
    assert all(r.headers["Content-Type"] == "application/fhir+json" for r in delivery.receiver.requests)


async def test_a_failed_handshake_is_retried_before_any_event(
    client: httpx.AsyncClient, delivery: Delivery, app: FastAPI
) -> None:
    delivery.receiver.script = [503]
    subscription_id = await subscribe(client, "task-assigned")
    await post(client, task())
    await delivery.round()
    assert [status_of(b)["type"] for b in bundles(delivery)] == ["handshake"]
    state = await delivery.state(subscription_id)
    assert state.handshake_due and state.last_error == "HTTP 503" and state.delivered_through == 0
    await make_due(app, subscription_id)
    await delivery.round()
    assert [status_of(b)["type"] for b in bundles(delivery)] == ["handshake", "handshake", "event-notification"]
    assert not (await delivery.state(subscription_id)).handshake_due


async def make_due(app: FastAPI, subscription_id: str, **values: Any) -> None:
    holder: ContextHolder = app.state.fhir
    async with holder.current.db.write() as conn:
        await conn.execute(
            update(subscription_state)
            .where(subscription_state.c.subscription_id == subscription_id)
            .values(retry_at=None, **values)
        )


@pytest.mark.parametrize("content", ["empty", "id-only", "full-resource"])
async def test_each_payload_content_carries_what_it_says(
    client: httpx.AsyncClient, delivery: Delivery, content: str
) -> None:
    subscription_id = await handshaken(client, delivery, "task-assigned", content=content)
    created = await post(client, task())
    await delivery.round()
    (bundle,) = bundles(delivery)
    status = status_of(bundle)
    assert status["type"] == "event-notification"
    assert status["events-since-subscription-start"] == "1"
    (event,) = status["notification-event"]
    assert event["event-number"] == "1"
    assert event["timestamp"] == created["meta"]["lastUpdated"]
    url = f"{TEST_BASE_URL}/Task/{created['id']}"
    if content == "empty":
        assert "focus" not in event
        assert len(bundle["entry"]) == 1
        return
    assert event["focus"] == {"reference": url}
    (_, entry) = bundle["entry"]
    assert entry["fullUrl"] == url
    assert entry["request"] == {"method": "POST", "url": "Task"}
    assert entry["response"]["status"] == "201"
    if content == "id-only":
        assert "resource" not in entry
    else:
        assert entry["resource"] == created
    assert delivery.receiver.requests[0].headers["X-Event-Id"] == f"{subscription_id}/1"


async def test_a_status_change_fires_once_and_an_unrelated_update_does_not(
    client: httpx.AsyncClient, delivery: Delivery
) -> None:
    await handshaken(client, delivery, "task-status-changed", "Task?owner=Practitioner/p1")
    created = await post(client, task())  # a create is not a status change
    accepted = await update_body(client, {**created, "status": "accepted"})
    await update_body(client, {**accepted, "priority": "urgent"})  # same status: no event
    other = await post(client, task(owner="Practitioner/p2"))
    await update_body(client, {**other, "status": "accepted"})  # another owner: filtered out
    await delivery.round()
    (bundle,) = bundles(delivery)
    assert [e["event-number"] for e in status_of(bundle)["notification-event"]] == ["1"]
    assert bundle["entry"][1]["fullUrl"].endswith(f"/Task/{created['id']}")
    assert bundle["entry"][1]["request"] == {"method": "PUT", "url": f"Task/{created['id']}"}


async def test_task_assigned_fires_on_a_new_owner_and_filters_by_owner(
    client: httpx.AsyncClient, delivery: Delivery
) -> None:
    await handshaken(client, delivery, "task-assigned", "Task?owner=Practitioner/p2")
    created = await post(client, task(owner="Practitioner/p1"))  # another owner
    moved = await update_body(client, {**created, "owner": {"reference": "Practitioner/p2"}})
    await update_body(client, {**moved, "status": "accepted"})  # still p2: not a new assignment
    await delivery.round()
    (bundle,) = bundles(delivery)
    assert status_of(bundle)["notification-event"][0]["focus"]["reference"].endswith(f"/Task/{created['id']}")


async def encounter(client: httpx.AsyncClient, status: str, code: str, patient: str = "Patient/p1") -> dict[str, Any]:
    body = {
        "resourceType": "Encounter",
        "status": status,
        "class": {"system": ACT, "code": code},
        "subject": {"reference": patient},
        "serviceProvider": {"reference": "Organization/general"},
    }
    return await post(client, body)


async def test_admit_and_discharge_are_the_adt_events_of_inpatient_encounters(
    client: httpx.AsyncClient, delivery: Delivery
) -> None:
    admit = await subscribe(client, "encounter-admit", "Encounter?patient=Patient/p1")
    discharge = await subscribe(client, "encounter-discharge", "Encounter?service-provider=Organization/general")
    await delivery.round()
    delivery.receiver.requests.clear()
    stay = await encounter(client, "in-progress", "IMP")
    await encounter(client, "in-progress", "AMB")  # an office visit: not an admission
    await encounter(client, "in-progress", "EMER", patient="Patient/p2")  # another patient: filtered out
    await update_body(client, {**stay, "status": "finished"})
    await delivery.round()
    assert foci_by_subscription(delivery) == {admit: [stay["id"]], discharge: [stay["id"]]}


async def test_referral_and_communication_topics_filter_by_their_parameters(
    client: httpx.AsyncClient, delivery: Delivery
) -> None:
    referral = await subscribe(client, "referral-created", "ServiceRequest?performer=Practitioner/cardio")
    message = await subscribe(client, "communication-received", "Communication?recipient=Practitioner/nurse")
    plan = await subscribe(client, "careplan-changed", "CarePlan?patient=Patient/p1&status=active")
    await delivery.round()
    delivery.receiver.requests.clear()
    order = {
        "resourceType": "ServiceRequest",
        "status": "active",
        "intent": "order",
        "subject": {"reference": "Patient/p1"},
    }
    sent = await post(client, {**order, "performer": [{"reference": "Practitioner/cardio"}]})
    await post(client, {**order, "intent": "proposal", "performer": [{"reference": "Practitioner/cardio"}]})
    await post(client, {**order, "performer": [{"reference": "Practitioner/other"}]})
    note = await post(
        client,
        {"resourceType": "Communication", "status": "completed", "recipient": [{"reference": "Practitioner/nurse"}]},
    )
    await post(client, {"resourceType": "Communication", "status": "completed"})
    care = {"resourceType": "CarePlan", "status": "active", "intent": "plan", "subject": {"reference": "Patient/p1"}}
    first = await post(client, care)
    await update_body(client, {**first, "description": "low-salt diet"})
    await post(client, {**care, "status": "draft"})
    await delivery.round()
    assert foci_by_subscription(delivery) == {
        referral: [sent["id"]],
        message: [note["id"]],
        plan: [first["id"], first["id"]],
    }


async def test_a_heartbeat_follows_a_quiet_period(client: httpx.AsyncClient, delivery: Delivery, app: FastAPI) -> None:
    subscription_id = await handshaken(client, delivery, "task-assigned", heartbeat=60)
    state = await delivery.state(subscription_id)
    assert state.heartbeat_seconds == 60
    assert utc_now() + timedelta(seconds=50) < state.heartbeat_at <= utc_now() + timedelta(seconds=60)
    await delivery.round()
    assert bundles(delivery) == []  # not due yet
    await make_due(app, subscription_id, heartbeat_at=utc_now() - timedelta(seconds=1))
    await delivery.round()
    (bundle,) = bundles(delivery)
    assert status_of(bundle)["type"] == "heartbeat"
    assert status_of(bundle)["events-since-subscription-start"] == "0"
    assert (await delivery.state(subscription_id)).heartbeat_at > utc_now() + timedelta(seconds=50)


@pytest.mark.parametrize(
    ("change", "element", "says"),
    [
        ({"criteria": "http://example.org/SubscriptionTopic/nothing"}, "Subscription.criteria", "not a topic"),
        (
            {"_criteria": {"extension": [{"url": FILTER_CRITERIA, "valueString": "Task?status=requested"}]}},
            "Subscription._criteria.extension",
            "can be filtered by owner, patient",
        ),
        (
            {"_criteria": {"extension": [{"url": FILTER_CRITERIA, "valueString": "CarePlan?patient=Patient/1"}]}},
            "Subscription._criteria.extension",
            "about Task",
        ),
        (
            {
                "_criteria": {
                    "extension": [{"url": FILTER_CRITERIA, "valueString": "Task?owner=Practitioner/1&owner:bad=x"}]
                }
            },
            "Subscription._criteria.extension",
            "bad",
        ),
    ],
)
async def test_an_unusable_topic_subscription_is_refused_naming_the_element(
    client: httpx.AsyncClient, change: dict[str, Any], element: str, says: str
) -> None:
    body = {**topic_subscription("task-assigned"), **change}
    response = await client.post("/fhir/Subscription", json=body, headers=FHIR_JSON_HEADERS)
    assert response.status_code == 400, response.text
    issue = response.json()["issue"][0]
    assert issue["expression"] == [element]
    assert says in issue["diagnostics"]


@pytest.mark.parametrize(
    ("channel", "says"),
    [
        ({"_payload": {"extension": [{"url": PAYLOAD_CONTENT, "valueCode": "everything"}]}}, "empty, id-only"),
        ({"extension": [{"url": HEARTBEAT_PERIOD, "valueUnsignedInt": 0}]}, "at least 1"),
        ({"payload": "application/fhir+xml"}, "application/fhir+json"),
    ],
)
async def test_unusable_channel_options_are_refused(
    client: httpx.AsyncClient, channel: dict[str, Any], says: str
) -> None:
    body = topic_subscription("task-assigned", content=None)
    body["channel"].update(channel)
    response = await client.post("/fhir/Subscription", json=body, headers=FHIR_JSON_HEADERS)
    assert response.status_code == 400, response.text
    assert says in response.json()["issue"][0]["diagnostics"]


@pytest.mark.parametrize(
    ("name", "parameter"), [(topic.name, parameter) for topic in TOPICS for parameter in sorted(topic.filters)]
)
async def test_every_filter_a_topic_offers_is_a_search_the_server_runs(
    client: httpx.AsyncClient, name: str, parameter: str
) -> None:
    topic = TOPICS.by_name(name)
    assert topic is not None
    value = {"status": "active", "category": "http://snomed.info/sct|3457005"}.get(parameter, "Patient/p1")
    if parameter in ("owner", "performer", "recipient", "focus"):
        value = "Practitioner/p1"
    if parameter == "service-provider":
        value = "Organization/general"
    body = topic_subscription(name, f"{topic.resource_type}?{parameter}={value}")
    response = await client.post("/fhir/Subscription", json=body, headers=FHIR_JSON_HEADERS)
    assert response.status_code == 201, response.text


async def test_a_transaction_entry_fires_a_topic(client: httpx.AsyncClient, delivery: Delivery) -> None:
    await handshaken(client, delivery, "task-assigned", "Task?owner=Practitioner/p1")
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": task(), "request": {"method": "POST", "url": "Task"}},
            {"resource": task(owner="Practitioner/p2"), "request": {"method": "POST", "url": "Task"}},
        ],
    }
    response = await client.post("/fhir", json=bundle, headers=FHIR_JSON_HEADERS)
    assert response.status_code == 200, response.text
    first = response.json()["entry"][0]["response"]["location"].split("/")[1]
    await delivery.round()
    (notification,) = bundles(delivery)
    assert status_of(notification)["notification-event"][0]["focus"]["reference"].endswith(f"/Task/{first}")


async def test_backport_timeout_bounds_each_attempt_under_the_servers_own_limit(
    client: httpx.AsyncClient, delivery: Delivery
) -> None:
    """``backport-timeout`` is how long the server waits before failing a notification; the server's
    own limit (``FHIR_SUBSCRIPTION_TIMEOUT_SECONDS``, 10 s here) still caps a longer one."""
    quick = topic_subscription("task-assigned", "Task?owner=Practitioner/p1")
    quick["channel"]["extension"] = [{"url": TIMEOUT, "valueUnsignedInt": 2}]
    slow = topic_subscription("task-assigned", "Task?owner=Practitioner/p2")
    slow["channel"]["extension"] = [{"url": TIMEOUT, "valueUnsignedInt": 600}]
    for body in (quick, slow):
        response = await client.post("/fhir/Subscription", json=body, headers=FHIR_JSON_HEADERS)
        assert response.status_code == 201, response.text
    await delivery.round()  # the two handshakes
    await post(client, task(owner="Practitioner/p1"))
    await delivery.round()
    kinds = [status_of(json.loads(request.content))["type"] for request in delivery.receiver.requests]
    given = list(zip(kinds, delivery.sender.timeouts, strict=True))
    assert sorted(given) == [("event-notification", 2.0), ("handshake", 2.0), ("handshake", 10.0)]
