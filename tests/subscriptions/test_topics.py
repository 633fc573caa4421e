"""The care-coordination topics shipped in capability/topics: valid R4B SubscriptionTopic resources whose
triggers compare the version before a write with the version after it."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

import pytest
from fhir.resources.R4B.subscriptiontopic import SubscriptionTopic

from app.subscriptions.topics import Topic, load_topics

TOPICS = load_topics()
ACT = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
NAMES = [
    "careplan-changed",
    "communication-received",
    "encounter-admit",
    "encounter-discharge",
    "referral-created",
    "task-assigned",
    "task-status-changed",
]


def topic(name: str) -> Topic:
    found = TOPICS.by_name(name)
    assert found is not None
    return found


def test_every_topic_is_a_valid_r4b_subscription_topic_named_by_its_url() -> None:
    folder = resources.files("capability").joinpath("topics")
    files = sorted(entry.name for entry in folder.iterdir() if entry.name.endswith(".json"))
    assert files == [f"{name}.json" for name in NAMES]
    for name in NAMES:
        body = json.loads(folder.joinpath(f"{name}.json").read_bytes())
        SubscriptionTopic.model_validate(body)
        assert body["url"].endswith(f"/{name}")
        assert TOPICS.by_url(body["url"]) == topic(name)
    assert [t.name for t in TOPICS] == NAMES


def test_a_version_suffix_on_the_canonical_is_ignored() -> None:
    assert TOPICS.by_url(topic("task-assigned").url + "|1.0") == topic("task-assigned")
    assert TOPICS.by_url("http://example.org/SubscriptionTopic/task-assigned") is None


@pytest.mark.parametrize(
    ("name", "resource_type", "filters"),
    [
        ("careplan-changed", "CarePlan", {"patient", "status"}),
        ("task-assigned", "Task", {"owner", "patient"}),
        ("task-status-changed", "Task", {"status", "owner", "patient", "focus"}),
        ("referral-created", "ServiceRequest", {"performer", "patient", "category"}),
        ("encounter-admit", "Encounter", {"patient", "service-provider"}),
        ("encounter-discharge", "Encounter", {"patient", "service-provider"}),
        ("communication-received", "Communication", {"recipient", "patient"}),
    ],
)
def test_each_topic_watches_its_type_with_its_filters(name: str, resource_type: str, filters: set[str]) -> None:
    assert topic(name).resource_type == resource_type
    assert topic(name).filters == filters


def task(status: str = "requested", owner: str | None = "Practitioner/1") -> dict[str, Any]:
    body: dict[str, Any] = {"resourceType": "Task", "status": status, "intent": "order"}
    if owner is not None:
        body["owner"] = {"reference": owner}
    return body


def encounter(status: str, code: str = "IMP", system: str | None = ACT) -> dict[str, Any]:
    coding = {"code": code} if system is None else {"system": system, "code": code}
    return {"resourceType": "Encounter", "status": status, "class": coding}


def test_careplan_changed_fires_on_every_create_and_update_but_not_delete() -> None:
    plan = {"resourceType": "CarePlan", "status": "active", "intent": "plan"}
    assert topic("careplan-changed").fires("create", None, plan)
    assert topic("careplan-changed").fires("update", plan, plan)
    assert not topic("careplan-changed").fires("delete", plan, None)


def test_task_assigned_fires_when_an_owner_is_set_or_changed() -> None:
    rule = topic("task-assigned")
    assert rule.fires("create", None, task())
    assert not rule.fires("create", None, task(owner=None))
    assert rule.fires("update", task(owner=None), task())
    assert rule.fires("update", task(owner="Practitioner/2"), task())
    assert not rule.fires("update", task(), task(status="accepted"))  # same owner
    assert not rule.fires("update", task(), task(owner=None))  # unassigned


def test_task_status_changed_fires_on_a_status_change_only() -> None:
    rule = topic("task-status-changed")
    assert rule.fires("update", task(), task(status="accepted"))
    assert not rule.fires("update", task(), {**task(), "priority": "urgent"})
    assert not rule.fires("create", None, task())


def test_referral_created_fires_for_new_orders_only() -> None:
    rule = topic("referral-created")
    order = {"resourceType": "ServiceRequest", "status": "active", "intent": "order"}
    assert rule.fires("create", None, order)
    assert not rule.fires("create", None, {**order, "intent": "proposal"})
    assert not rule.fires("update", order, order)


@pytest.mark.parametrize("code", ["IMP", "EMER", "OBSENC"])
def test_admit_and_discharge_fire_when_an_inpatient_encounter_changes_status(code: str) -> None:
    admit, discharge = topic("encounter-admit"), topic("encounter-discharge")
    assert admit.fires("create", None, encounter("in-progress", code))
    assert admit.fires("update", encounter("planned", code), encounter("in-progress", code))
    assert not admit.fires("update", encounter("in-progress", code), encounter("in-progress", code))
    assert discharge.fires("update", encounter("in-progress", code), encounter("finished", code))
    assert not discharge.fires("update", encounter("finished", code), encounter("finished", code))
    assert not admit.fires("update", encounter("in-progress", code), encounter("finished", code))


def test_admit_ignores_ambulatory_encounters_and_accepts_a_class_without_a_system() -> None:
    admit = topic("encounter-admit")
    assert not admit.fires("create", None, encounter("in-progress", "AMB"))
    assert not admit.fires("create", None, encounter("in-progress", "IMP", system="http://example.org/other"))
    assert admit.fires("create", None, encounter("in-progress", "IMP", system=None))


def test_communication_received_fires_on_create() -> None:
    message = {"resourceType": "Communication", "status": "completed"}
    assert topic("communication-received").fires("create", None, message)
    assert not topic("communication-received").fires("update", message, message)
