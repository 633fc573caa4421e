"""System-level search across types: GET [base]?_type=...&... (search.html#_type)."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import TEST_BASE_URL
from tests.search.loading import put_all


@pytest.fixture
async def data(client: httpx.AsyncClient) -> httpx.AsyncClient:
    resources = [
        {
            "resourceType": "CarePlan",
            "id": "a1",
            "status": "active",
            "intent": "plan",
            "subject": {"reference": "Patient/p1"},
            "meta": {"tag": [{"system": "urn:t", "code": "hf"}]},
        },
        {
            "resourceType": "Task",
            "id": "a2",
            "status": "requested",
            "intent": "order",
            "meta": {"tag": [{"system": "urn:t", "code": "hf"}]},
        },
        {"resourceType": "Task", "id": "a3", "status": "requested", "intent": "order"},
        {
            "resourceType": "Goal",
            "id": "a4",
            "lifecycleStatus": "active",
            "description": {"text": "walk"},
            "subject": {"reference": "Patient/p1"},
            "meta": {"tag": [{"system": "urn:t", "code": "hf"}]},
        },
    ]
    return await put_all(client, resources)


def refs(bundle: dict) -> list[str]:
    return [f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in bundle.get("entry", [])]


async def test_type_and_common_parameters(data: httpx.AsyncClient) -> None:
    bundle = (await data.get("/fhir?_type=Task,CarePlan&_tag=urn:t|hf")).json()
    assert refs(bundle) == ["CarePlan/a1", "Task/a2"]
    everything = (await data.get("/fhir?_tag=hf&_total=accurate")).json()
    assert refs(everything) == ["CarePlan/a1", "Goal/a4", "Task/a2"]
    assert everything["total"] == 3


async def test_parameters_not_on_every_type_are_dropped_or_400(data: httpx.AsyncClient) -> None:
    both = (await data.get("/fhir?_type=Task,CarePlan&status=requested")).json()
    assert refs(both) == ["Task/a2", "Task/a3"]  # both types define status
    lenient = (await data.get("/fhir?_type=Task,Goal&status=requested")).json()
    assert refs(lenient) == ["Goal/a4", "Task/a2", "Task/a3"]  # Goal has no status: dropped for all
    assert "status" not in lenient["link"][0]["url"]
    strict = await data.get("/fhir?_type=Task,Goal&status=requested", headers={"Prefer": "handling=strict"})
    assert strict.status_code == 400
    unknown_type = await data.get("/fhir?_type=Spaceship")
    assert unknown_type.status_code == 400


async def test_paging_across_types(data: httpx.AsyncClient) -> None:
    seen: list[str] = []
    url: str | None = "/fhir?_type=CarePlan,Goal,Task&_count=1"
    while url:
        bundle = (await data.get(url)).json()
        seen += refs(bundle)
        nxt = [link["url"] for link in bundle["link"] if link["relation"] == "next"]
        url = "/fhir" + nxt[0][len(TEST_BASE_URL) :] if nxt else None
    assert seen == ["CarePlan/a1", "Goal/a4", "Task/a2", "Task/a3"]
