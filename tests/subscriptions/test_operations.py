"""$status, $events and $get-ws-binding-token of Subscriptions, the topic list, and what the
CapabilityStatement says of them, on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from app.subscriptions.backport import BACKPORT, PROFILE
from app.subscriptions.topics import load_topics
from tests.conftest import FHIR_JSON_HEADERS, TEST_BASE_URL
from tests.subscriptions.conftest import Delivery, post, task
from tests.subscriptions.conftest import subscribe as subscribe_criteria
from tests.subscriptions.test_backport import status_of, subscribe, topic_subscription, topic_url, update_body

TOPICS = load_topics()


def statuses(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "searchset"
    return [status_of({"entry": [entry]}) for entry in bundle["entry"]]


async def test_status_tells_the_events_the_last_error_and_the_recent_attempts(
    client: httpx.AsyncClient, delivery: Delivery
) -> None:
    subscription_id = await subscribe(client, "task-assigned")
    await post(client, task())
    delivery.receiver.script = [200, 503]  # the handshake goes through, the event does not
    await delivery.round()
    response = await client.get(f"/fhir/Subscription/{subscription_id}/$status")
    assert response.status_code == 200
    (status,) = statuses(response.json())
    assert response.json()["entry"][0]["resource"]["meta"]["profile"] == [BACKPORT + "backport-subscription-status-r4"]
    assert status["subscription"] == {"reference": f"{TEST_BASE_URL}/Subscription/{subscription_id}"}
    assert status["topic"] == topic_url("task-assigned")
    assert status["status"] == "active"
    assert status["type"] == "query-status"
    assert status["events-since-subscription-start"] == "1"
    assert status["error"] == {"text": "HTTP 503"}
    attempts = [
        {part["name"]: next(v for k, v in part.items() if k != "name") for part in parameter["part"]}
        for parameter in response.json()["entry"][0]["resource"]["parameter"]
        if parameter["name"] == "delivery-attempt"
    ]
    assert [(a["event-number"], a["delivered"], a["outcome"]) for a in attempts] == [
        ("1", False, "HTTP 503"),
        ("0", True, "handshake: HTTP 200"),
    ]


async def test_status_of_many_filters_by_id_and_status(client: httpx.AsyncClient) -> None:
    topic_based = await subscribe(client, "careplan-changed")
    criteria = await subscribe_criteria(client, "Task?status=requested")
    off = await client.post(
        "/fhir/Subscription", json={**topic_subscription("task-assigned"), "status": "off"}, headers=FHIR_JSON_HEADERS
    )
    assert off.status_code == 201
    every = statuses((await client.get("/fhir/Subscription/$status")).json())
    by_id = {s["subscription"]["reference"].rsplit("/", 1)[1]: s for s in every}
    assert set(by_id) == {topic_based, criteria, off.json()["id"]}
    assert "topic" not in by_id[criteria]  # an R4 criteria Subscription has no topic
    assert by_id[off.json()["id"]]["status"] == "off"
    active = statuses((await client.get("/fhir/Subscription/$status", params={"status": "active"})).json())
    assert {s["subscription"]["reference"].rsplit("/", 1)[1] for s in active} == {topic_based, criteria}
    posted = await client.post(
        "/fhir/Subscription/$status",
        json={"resourceType": "Parameters", "parameter": [{"name": "id", "valueId": criteria}]},
        headers=FHIR_JSON_HEADERS,
    )
    assert [s["subscription"]["reference"] for s in statuses(posted.json())] == [
        f"{TEST_BASE_URL}/Subscription/{criteria}"
    ]


async def test_status_of_an_unknown_subscription_is_404(client: httpx.AsyncClient) -> None:
    response = await client.get("/fhir/Subscription/nobody/$status")
    assert response.status_code == 404
    assert response.json()["issue"][0]["code"] == "not-found"


async def test_events_gives_back_a_range_of_missed_events(client: httpx.AsyncClient, delivery: Delivery) -> None:
    subscription_id = await subscribe(client, "task-status-changed", content="id-only")
    created = await post(client, task())
    versions = [created]
    for status in ("accepted", "in-progress", "completed"):
        versions.append(await update_body(client, {**versions[-1], "status": status}))
    response = await client.get(
        f"/fhir/Subscription/{subscription_id}/$events", params={"eventsSinceNumber": "2", "eventsUntilNumber": "3"}
    )
    assert response.status_code == 200
    bundle = response.json()
    assert bundle["type"] == "history"
    status = status_of(bundle)
    assert status["type"] == "query-event"
    assert status["events-since-subscription-start"] == "3"
    assert [e["event-number"] for e in status["notification-event"]] == ["2", "3"]
    assert [e["timestamp"] for e in status["notification-event"]] == [v["meta"]["lastUpdated"] for v in versions[2:4]]
    assert [entry.get("resource") for entry in bundle["entry"][1:]] == [None, None]
    full = await client.get(
        f"/fhir/Subscription/{subscription_id}/$events", params={"eventsSinceNumber": "3", "content": "full-resource"}
    )
    assert [entry["resource"] for entry in full.json()["entry"][1:]] == [versions[3]]
    every = await client.get(f"/fhir/Subscription/{subscription_id}/$events")
    assert [e["event-number"] for e in status_of(every.json())["notification-event"]] == ["1", "2", "3"]


async def test_events_refuses_what_it_cannot_answer(client: httpx.AsyncClient) -> None:
    subscription_id = await subscribe(client, "task-assigned")
    bad_number = await client.get(f"/fhir/Subscription/{subscription_id}/$events?eventsSinceNumber=two")
    assert bad_number.status_code == 400
    assert "eventsSinceNumber" in bad_number.json()["issue"][0]["diagnostics"]
    bad_content = await client.get(f"/fhir/Subscription/{subscription_id}/$events?content=all")
    assert bad_content.status_code == 400
    assert "empty, id-only, full-resource" in bad_content.json()["issue"][0]["diagnostics"]
    unknown = await client.get("/fhir/Subscription/nobody/$events")
    assert unknown.status_code == 404


async def test_a_binding_token_is_for_a_websocket_subscription(client: httpx.AsyncClient) -> None:
    rest_hook = await subscribe(client, "task-assigned")
    refused = await client.post(f"/fhir/Subscription/{rest_hook}/$get-ws-binding-token")
    assert refused.status_code == 400
    assert "websocket" in refused.json()["issue"][0]["diagnostics"]
    body = topic_subscription("task-assigned")
    body["channel"] = {"type": "websocket", "payload": "application/fhir+json", "_payload": body["channel"]["_payload"]}
    created = await client.post("/fhir/Subscription", json=body, headers=FHIR_JSON_HEADERS)
    assert created.status_code == 201, created.text
    response = await client.post(f"/fhir/Subscription/{created.json()['id']}/$get-ws-binding-token")
    assert response.status_code == 200
    values = {p["name"]: next(v for k, v in p.items() if k != "name") for p in response.json()["parameter"]}
    assert set(values) == {"token", "expiration", "subscription", "websocket-url"}
    assert len(values["token"]) >= 40
    assert values["subscription"] == created.json()["id"]
    assert values["websocket-url"] == "ws://testserver/fhir/websocket"


async def test_the_topics_are_listed_and_read_at_subscription_topic(client: httpx.AsyncClient) -> None:
    listed = (await client.get("/fhir/SubscriptionTopic")).json()
    assert listed["total"] == 7
    assert [entry["resource"]["id"] for entry in listed["entry"]] == [topic.name for topic in TOPICS]
    assert listed["entry"][0]["fullUrl"] == f"{TEST_BASE_URL}/SubscriptionTopic/careplan-changed"
    tasks = (await client.get("/fhir/SubscriptionTopic", params={"resource": "Task"})).json()
    assert sorted(entry["resource"]["id"] for entry in tasks["entry"]) == ["task-assigned", "task-status-changed"]
    by_url = (await client.get("/fhir/SubscriptionTopic", params={"url": topic_url("referral-created")})).json()
    assert [entry["resource"]["id"] for entry in by_url["entry"]] == ["referral-created"]
    one = await client.get("/fhir/SubscriptionTopic/task-assigned")
    assert one.status_code == 200
    assert one.json()["resourceTrigger"][0]["resource"] == "Task"
    assert (await client.get("/fhir/SubscriptionTopic/nothing")).status_code == 404
    unknown = await client.get("/fhir/SubscriptionTopic", params={"title": "x"})
    assert unknown.status_code == 400
    assert "title" in unknown.json()["issue"][0]["diagnostics"]


async def test_the_capability_statement_lists_topics_profile_and_operations(client: httpx.AsyncClient) -> None:
    statement = (await client.get("/fhir/metadata")).json()
    (rest,) = statement["rest"]
    subscription = next(r for r in rest["resource"] if r["type"] == "Subscription")
    assert subscription["supportedProfile"] == [PROFILE]
    assert [e["valueCanonical"] for e in subscription["extension"]] == [t.url for t in TOPICS]
    assert {e["url"] for e in subscription["extension"]} == {
        BACKPORT + "capabilitystatement-subscriptiontopic-canonical"
    }
    assert {op["name"]: op["definition"] for op in subscription["operation"]} == {
        "status": "http://hl7.org/fhir/uv/subscriptions-backport/OperationDefinition/backport-subscription-status",
        "events": "http://hl7.org/fhir/uv/subscriptions-backport/OperationDefinition/backport-subscription-events",
        "get-ws-binding-token": "http://hl7.org/fhir/uv/subscriptions-backport/OperationDefinition/"
        "backport-subscription-get-ws-binding-token",
    }
    assert {op["name"] for op in rest["operation"]} == {"reindex", "validate"}
    task_type = next(r for r in rest["resource"] if r["type"] == "Task")
    assert "operation" not in task_type


async def test_a_subscription_operation_on_another_type_is_not_supported(client: httpx.AsyncClient) -> None:
    response = await client.get("/fhir/Task/$status")
    assert response.status_code == 400  # not-supported, as for any operation the server does not offer
    assert "operation of Subscription" in response.json()["issue"][0]["diagnostics"]
    wrong_level = await client.get("/fhir/Subscription/$events")
    assert wrong_level.status_code == 405
    assert "/Subscription/[id]/$events" in wrong_level.json()["issue"][0]["diagnostics"]


@pytest.mark.parametrize(
    "parameters", [{"name": "id"}, [1, None], [{"valueId": "x"}], [{"name": ["id"], "valueId": "x"}], "id"]
)
async def test_a_malformed_parameters_body_is_a_400(client: httpx.AsyncClient, parameters: object) -> None:
    response = await client.post(
        "/fhir/Subscription/$status",
        json={"resourceType": "Parameters", "parameter": parameters},
        headers=FHIR_JSON_HEADERS,
    )
    assert response.status_code == 400
    assert response.json()["issue"][0]["expression"] == ["Parameters.parameter"]
