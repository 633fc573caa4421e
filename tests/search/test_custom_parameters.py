"""SearchParameters stored by clients become live parameters; ``$reindex`` indexes older data for them."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from app.config import Settings
from app.interactions.search_parameters import refresh_if_changed
from app.main import create_app
from tests.conftest import FHIR_JSON_HEADERS
from tests.interactions.test_jobs import completed
from tests.search.test_search_api import ids


def search_parameter(**changes: Any) -> dict[str, Any]:
    resource = {
        "resourceType": "SearchParameter",
        "url": "http://example.org/fhir/SearchParameter/careplan-title",
        "name": "CarePlanTitle",
        "status": "active",
        "description": "Search care plans by title",
        "code": "title",
        "base": ["CarePlan"],
        "type": "string",
        "expression": "CarePlan.title",
    }
    resource.update(changes)
    return resource


def plan(title: str) -> dict[str, Any]:
    return {
        "resourceType": "CarePlan",
        "status": "active",
        "intent": "plan",
        "title": title,
        "subject": {"reference": "Patient/p1"},
    }


async def post(client: httpx.AsyncClient, body: dict[str, Any]) -> httpx.Response:
    return await client.post(f"/fhir/{body['resourceType']}", json=body, headers=FHIR_JSON_HEADERS)


async def declared(client: httpx.AsyncClient, resource_type: str) -> dict[str, dict[str, Any]]:
    statement = (await client.get("/fhir/metadata")).json()
    entry = next(r for r in statement["rest"][0]["resource"] if r["type"] == resource_type)
    return {p["name"]: p for p in entry["searchParam"]}


async def test_posted_parameter_is_live_and_reindex_covers_older_data(client: httpx.AsyncClient) -> None:
    before = (await post(client, plan("Heart failure discharge plan"))).json()["id"]
    assert "title" not in await declared(client, "CarePlan")
    strict = {"Prefer": "handling=strict"}
    assert (await client.get("/fhir/CarePlan?title=heart", headers=strict)).status_code == 400

    created = await post(client, search_parameter())
    assert created.status_code == 201, created.text
    after = (await post(client, plan("Heart transplant work-up"))).json()["id"]
    assert (await declared(client, "CarePlan"))["title"]["definition"] == search_parameter()["url"]
    # written after the parameter: indexed at once; written before: not until $reindex
    assert await ids(client, "CarePlan?title=heart", **strict) == [after]

    response = await completed(client, await client.post("/fhir/CarePlan/$reindex"))  # async.html: 202, then poll
    assert response.status_code == 200
    result = response.json()
    assert result["resourceType"] == "Parameters"
    assert result["parameter"][0] == {"name": "count", "valueInteger": 2}
    assert await ids(client, "CarePlan?title=heart") == sorted([before, after])
    assert await ids(client, "CarePlan?title=heart%20tr") == [after]  # strings match from the start
    # sorting and :missing work on it like on an official parameter
    sorted_ids = (await client.get("/fhir/CarePlan?_sort=-title")).json()["entry"]
    assert [e["resource"]["id"] for e in sorted_ids] == [after, before]


async def test_system_and_instance_reindex(client: httpx.AsyncClient) -> None:
    first = (await post(client, plan("Diabetes education"))).json()["id"]
    await post(client, {"resourceType": "Patient", "name": [{"family": "Okafor"}]})
    assert (await post(client, search_parameter())).status_code == 201
    assert await ids(client, "CarePlan?title=diabetes") == []
    one = (await client.post(f"/fhir/CarePlan/{first}/$reindex")).json()
    assert one["parameter"][0]["valueInteger"] == 1
    assert await ids(client, "CarePlan?title=diabetes") == [first]
    everything = (await completed(client, await client.post("/fhir/$reindex"))).json()
    counts = {p["part"][0]["valueCode"]: p["part"][1]["valueInteger"] for p in everything["parameter"][1:]}
    assert counts == {"CarePlan": 1, "Patient": 1, "SearchParameter": 1}
    assert (await client.post("/fhir/CarePlan/nope/$reindex")).status_code == 404
    assert (await client.post("/fhir/Nonsense/$reindex")).status_code == 404


@pytest.mark.parametrize(
    ("changes", "expression"),
    [
        ({"expression": "CarePlan.title.where("}, "SearchParameter.expression"),
        ({"base": ["NotAType"]}, "SearchParameter.base"),
        ({"type": "special"}, "SearchParameter.type"),
        ({"expression": None}, "SearchParameter.expression"),
    ],
)
async def test_unusable_active_parameter_is_rejected(
    client: httpx.AsyncClient, changes: dict[str, Any], expression: str
) -> None:
    body = {k: v for k, v in search_parameter(**changes).items() if v is not None}
    response = await post(client, body)
    assert response.status_code == 400
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert any(e.startswith(expression) for e in outcome["issue"][0]["expression"])
    assert "entry" not in (await client.get("/fhir/SearchParameter")).json()


async def test_draft_or_deleted_parameter_is_not_live(client: httpx.AsyncClient) -> None:
    draft = await post(client, search_parameter(status="draft", expression="CarePlan.title.where("))
    assert draft.status_code == 201  # stored as data; not searchable
    assert "title" not in await declared(client, "CarePlan")
    active = (await post(client, search_parameter(url="http://example.org/sp2"))).json()
    assert "title" in await declared(client, "CarePlan")
    assert (await client.delete(f"/fhir/SearchParameter/{active['id']}")).status_code == 200
    assert "title" not in await declared(client, "CarePlan")
    response = await client.get("/fhir/CarePlan?title=x", headers={"Prefer": "handling=strict"})
    assert response.status_code == 400


async def test_other_processes_and_restarts_pick_the_parameter_up(app: FastAPI, settings: Settings) -> None:
    other = create_app(settings)  # a second worker on the same database
    try:
        async with other.router.lifespan_context(other):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
                assert (await post(client, search_parameter())).status_code == 201
                await post(client, plan("Stroke rehabilitation"))
            assert "title" not in other.state.fhir.current.registry.for_type("CarePlan")
            assert await refresh_if_changed(other.state.fhir) is True
            assert await refresh_if_changed(other.state.fhir) is False
            transport = httpx.ASGITransport(app=other)
            async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
                assert len(await ids(client, "CarePlan?title=stroke")) == 1
        restarted = create_app(settings)
        async with restarted.router.lifespan_context(restarted):
            assert "title" in restarted.state.fhir.current.registry.for_type("CarePlan")
    finally:
        await other.state.fhir.current.db.dispose()
