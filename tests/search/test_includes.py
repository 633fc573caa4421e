"""_include and _revinclude, with :iterate and *, marked search.mode include (search.html#include)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.search.loading import put_all

RESOURCES: list[dict[str, Any]] = [
    {"resourceType": "Patient", "id": "pat1", "name": [{"family": "Rivera"}]},
    {"resourceType": "Practitioner", "id": "doc1", "name": [{"family": "Cardio"}]},
    {
        "resourceType": "ServiceRequest",
        "id": "ref1",
        "status": "active",
        "intent": "order",
        "subject": {"reference": "Patient/pat1"},
        "requester": {"reference": "Practitioner/doc1"},
    },
    {
        "resourceType": "ServiceRequest",
        "id": "ref2",
        "status": "active",
        "intent": "order",
        "subject": {"reference": "Patient/pat1"},
    },
    {
        "resourceType": "Task",
        "id": "task1",
        "status": "requested",
        "intent": "order",
        "basedOn": [{"reference": "ServiceRequest/ref1"}],
        "owner": {"reference": "Practitioner/doc1"},
    },
    {
        "resourceType": "Task",
        "id": "task2",
        "status": "completed",
        "intent": "order",
        "basedOn": [{"reference": "ServiceRequest/ref1"}],
    },
    {
        "resourceType": "Task",
        "id": "task3",
        "status": "requested",
        "intent": "order",
        "basedOn": [{"reference": "ServiceRequest/other"}],
    },
]


@pytest.fixture
async def data(client: httpx.AsyncClient) -> httpx.AsyncClient:
    return await put_all(client, RESOURCES)


async def entries(client: httpx.AsyncClient, query: str) -> tuple[list[str], list[str]]:
    response = await client.get(f"/fhir/{query}")
    assert response.status_code == 200, response.text
    bundle = response.json()
    matches = sorted(
        f"{e['resource']['resourceType']}/{e['resource']['id']}"
        for e in bundle.get("entry", [])
        if e["search"]["mode"] == "match"
    )
    included = sorted(
        f"{e['resource']['resourceType']}/{e['resource']['id']}"
        for e in bundle.get("entry", [])
        if e["search"]["mode"] == "include"
    )
    return matches, included


async def test_revinclude_brings_the_tasks_of_a_referral(data: httpx.AsyncClient) -> None:
    matches, included = await entries(data, "ServiceRequest?_id=ref1&_revinclude=Task:based-on")
    assert matches == ["ServiceRequest/ref1"]
    assert included == ["Task/task1", "Task/task2"]


async def test_include_follows_references_and_target_type(data: httpx.AsyncClient) -> None:
    _, included = await entries(data, "ServiceRequest?_id=ref1&_include=ServiceRequest:subject")
    assert included == ["Patient/pat1"]
    _, included = await entries(data, "ServiceRequest?_id=ref1&_include=ServiceRequest:*")
    assert included == ["Patient/pat1", "Practitioner/doc1"]
    _, included = await entries(data, "ServiceRequest?_id=ref1&_include=ServiceRequest:requester:Organization")
    assert included == []


async def test_include_iterate_goes_on_from_included_resources(data: httpx.AsyncClient) -> None:
    query = "Task?_id=task1&_include=Task:based-on&_include:iterate=ServiceRequest:subject"
    matches, included = await entries(data, query)
    assert matches == ["Task/task1"]
    assert included == ["Patient/pat1", "ServiceRequest/ref1"]
    _, without_iterate = await entries(data, "Task?_id=task1&_include=Task:based-on&_include=ServiceRequest:subject")
    assert without_iterate == ["ServiceRequest/ref1"]


async def test_included_resources_are_not_repeated_and_deleted_ones_left_out(data: httpx.AsyncClient) -> None:
    _, included = await entries(data, "Task?status=requested,completed&_include=Task:based-on")
    assert included == ["ServiceRequest/ref1"]
    await data.delete("/fhir/ServiceRequest/ref1")
    _, included = await entries(data, "Task?_id=task1&_include=Task:based-on")
    assert included == []


async def test_self_link_keeps_includes_and_bad_includes_are_400(data: httpx.AsyncClient) -> None:
    bundle = (await data.get("/fhir/ServiceRequest?_revinclude=Task:based-on")).json()
    assert "_revinclude=Task%3Abased-on" in bundle["link"][0]["url"]
    for name, bad in [
        ("_revinclude", "Task"),
        ("_revinclude", "Task:status"),
        ("_revinclude", "Task:nope"),
        ("_include", "ServiceRequest:requester:Condition"),
    ]:
        response = await data.get(f"/fhir/ServiceRequest?{name}={bad}")
        assert response.status_code == 400, bad
        assert response.json()["issue"][0]["expression"] == [name]


async def test_capability_statement_lists_include_values(data: httpx.AsyncClient) -> None:
    statement = (await data.get("/fhir/metadata")).json()
    entry = next(r for r in statement["rest"][0]["resource"] if r["type"] == "ServiceRequest")
    assert "ServiceRequest:subject" in entry["searchInclude"]
    assert "*" in entry["searchInclude"]
    assert "Task:based-on" in entry["searchRevInclude"]


async def count(client: httpx.AsyncClient, query: str) -> int:
    bundle = (await client.get(f"/fhir/{query}&_total=accurate")).json()
    return int(bundle["total"])


async def test_chaining_through_references(data: httpx.AsyncClient) -> None:
    matches, _ = await entries(data, "ServiceRequest?subject.name=rivera")
    assert matches == ["ServiceRequest/ref1", "ServiceRequest/ref2"]
    matches, _ = await entries(data, "ServiceRequest?subject:Patient.name=rivera&requester.family=cardio")
    assert matches == ["ServiceRequest/ref1"]
    matches, _ = await entries(data, "Task?based-on:ServiceRequest.subject.name=rivera")
    assert matches == ["Task/task1", "Task/task2"]
    matches, _ = await entries(data, "Task?based-on:ServiceRequest.requester:Practitioner.name=cardio")
    assert matches == ["Task/task1", "Task/task2"]
    matches, _ = await entries(data, "ServiceRequest?subject.name=nobody")
    assert matches == []
    assert await count(data, "ServiceRequest?subject.name=rivera") == 2


async def test_reverse_chaining_with_has(data: httpx.AsyncClient) -> None:
    matches, _ = await entries(data, "ServiceRequest?_has:Task:based-on:status=requested")
    assert matches == ["ServiceRequest/ref1"]
    matches, _ = await entries(data, "ServiceRequest?_has:Task:based-on:status=cancelled")
    assert matches == []
    matches, _ = await entries(data, "Patient?_has:ServiceRequest:subject:_has:Task:based-on:status=completed")
    assert matches == ["Patient/pat1"]
    matches, _ = await entries(data, "Practitioner?_has:Task:owner:based-on.subject.name=rivera")
    assert matches == ["Practitioner/doc1"]


async def test_bad_chains_and_has(data: httpx.AsyncClient) -> None:
    for query, name in [
        ("ServiceRequest?status.name=x", "status.name"),
        ("ServiceRequest?_has:Task:based-on=x", "_has:Task:based-on"),
        ("ServiceRequest?subject:Device.name=x", "subject:Device.name"),
    ]:
        response = await data.get(f"/fhir/{query}", headers={"Prefer": "handling=strict"})
        assert response.status_code == 400, query
        assert response.json()["issue"][0]["expression"] == [name]
    lenient = (await data.get("/fhir/ServiceRequest?subject.colour=x")).json()
    assert len(lenient["entry"]) == 2  # an unknown chained parameter is ignored
