"""history for instance, type and system: newest first, _count, _since, paging links."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from tests.conftest import FHIR_JSON_HEADERS, TEST_BASE_URL


async def post(client: httpx.AsyncClient, resource: dict[str, Any]) -> dict[str, Any]:
    response = await client.post(f"/fhir/{resource['resourceType']}", json=resource, headers=FHIR_JSON_HEADERS)
    assert response.status_code == 201
    body: dict[str, Any] = response.json()
    return body


def relative(url: str) -> str:
    assert url.startswith(TEST_BASE_URL)
    return "/fhir" + url[len(TEST_BASE_URL) :]


async def walk(client: httpx.AsyncClient, first: str) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = []
    url: str | None = first
    while url:
        bundle = (await client.get(url)).json()
        assert bundle["type"] == "history"
        entries.extend(bundle.get("entry", []))
        nxt = [link["url"] for link in bundle["link"] if link["relation"] == "next"]
        url = relative(nxt[0]) if nxt else None
    return entries


async def test_instance_history_lists_versions_newest_first(client: httpx.AsyncClient) -> None:
    goal = {
        "resourceType": "Goal",
        "lifecycleStatus": "proposed",
        "description": {"text": "walk"},
        "subject": {"reference": "Patient/p1"},
    }
    gid = (await post(client, goal))["id"]
    for status in ("accepted", "active"):
        await client.put(
            f"/fhir/Goal/{gid}", json={**goal, "id": gid, "lifecycleStatus": status}, headers=FHIR_JSON_HEADERS
        )
    await client.delete(f"/fhir/Goal/{gid}")
    bundle = (await client.get(f"/fhir/Goal/{gid}/_history")).json()
    assert bundle["resourceType"] == "Bundle"
    entries = bundle["entry"]
    assert [e["response"]["etag"] for e in entries] == ['W/"4"', 'W/"3"', 'W/"2"', 'W/"1"']
    assert [e["request"]["method"] for e in entries] == ["DELETE", "PUT", "PUT", "POST"]
    assert "resource" not in entries[0]
    assert entries[1]["resource"]["lifecycleStatus"] == "active"
    assert entries[3]["request"]["url"] == "Goal"
    assert entries[2]["request"]["url"] == f"Goal/{gid}"
    assert entries[1]["fullUrl"] == f"{TEST_BASE_URL}/Goal/{gid}"
    assert bundle["link"][0] == {"relation": "self", "url": f"{TEST_BASE_URL}/Goal/{gid}/_history?_count=50"}


async def test_type_and_system_history(client: httpx.AsyncClient) -> None:
    await post(client, {"resourceType": "Patient", "active": True})
    await post(client, {"resourceType": "Organization", "name": "Clinic"})
    await post(client, {"resourceType": "Patient", "active": False})
    patients = (await client.get("/fhir/Patient/_history")).json()["entry"]
    assert [e["resource"]["active"] for e in patients] == [False, True]
    everything = (await client.get("/fhir/_history")).json()["entry"]
    assert [e["resource"]["resourceType"] for e in everything] == ["Patient", "Organization", "Patient"]


async def test_paging_walks_every_version_exactly_once(client: httpx.AsyncClient) -> None:
    created = [await post(client, {"resourceType": "Patient", "gender": "other"}) for _ in range(7)]
    entries = await walk(client, "/fhir/Patient/_history?_count=3")
    assert sorted(e["resource"]["id"] for e in entries) == sorted(c["id"] for c in created)
    assert len(entries) == 7


async def test_paging_is_stable_while_others_write(client: httpx.AsyncClient) -> None:
    before = [await post(client, {"resourceType": "Patient", "gender": "male"}) for _ in range(6)]
    first = (await client.get("/fhir/Patient/_history?_count=2")).json()
    seen = [e["resource"]["id"] for e in first.get("entry", [])]
    await asyncio.gather(*(post(client, {"resourceType": "Patient", "gender": "female"}) for _ in range(3)))
    nxt = next(link["url"] for link in first["link"] if link["relation"] == "next")
    seen += [e["resource"]["id"] for e in await walk(client, relative(nxt))]
    assert sorted(seen) == sorted(p["id"] for p in before)


async def test_count_and_since(client: httpx.AsyncClient) -> None:
    first = await post(client, {"resourceType": "Patient", "gender": "male"})
    second = await post(client, {"resourceType": "Patient", "gender": "female"})
    since = second["meta"]["lastUpdated"]
    recent = (await client.get(f"/fhir/Patient/_history?_since={since}")).json()
    assert [e["resource"]["id"] for e in recent.get("entry", [])] == [second["id"]]
    one = (await client.get("/fhir/Patient/_history?_count=1")).json()
    assert len(one["entry"]) == 1
    assert any(link["relation"] == "next" for link in one["link"])
    assert first["id"] != second["id"]
    zero = (await client.get("/fhir/Patient/_history?_count=0")).json()
    assert "entry" not in zero


async def test_history_of_empty_type_is_empty_bundle(client: httpx.AsyncClient) -> None:
    bundle = (await client.get("/fhir/CareTeam/_history")).json()
    assert bundle["type"] == "history"
    assert "entry" not in bundle
