"""Search semantics per parameter type, prefix and modifier (hl7.org/fhir/R4/search.html), both backends."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import FHIR_JSON_HEADERS, TEST_BASE_URL
from tests.search.loading import put_all


async def ids(client: httpx.AsyncClient, query: str, **headers: str) -> list[str]:
    response = await client.get(f"/fhir/{query}", headers=headers)
    assert response.status_code == 200, response.text
    bundle = response.json()
    assert bundle["type"] == "searchset"
    assert all(e["search"]["mode"] == "match" for e in bundle.get("entry", []))
    return sorted(e["resource"]["id"] for e in bundle.get("entry", []))


PATIENTS = [
    {
        "resourceType": "Patient",
        "id": "p1",
        "active": True,
        "gender": "female",
        "birthDate": "1970-03-15",
        "name": [{"family": "Müller", "given": ["Anna"]}],
        "identifier": [{"system": "urn:mrn", "value": "100"}, {"system": "urn:other", "value": "a,b"}],
        "telecom": [{"system": "email", "value": "anna@example.org"}],
    },
    {
        "resourceType": "Patient",
        "id": "p2",
        "active": False,
        "gender": "male",
        "birthDate": "1985",
        "name": [{"family": "Smith", "given": ["John"]}],
        "identifier": [{"value": "200"}],
    },
    {"resourceType": "Patient", "id": "p3", "gender": "male", "name": [{"family": "Smithers"}]},
]

PLANS = [
    {
        "resourceType": "CarePlan",
        "id": "cp1",
        "status": "active",
        "intent": "plan",
        "subject": {"reference": "Patient/p1"},
        "period": {"start": "2026-01-01", "end": "2026-03-31"},
        "category": [{"coding": [{"system": "http://snomed.info/sct", "code": "734163000", "display": "Care plan"}]}],
        "instantiatesUri": ["http://example.org/protocols/heart-failure/v2"],
    },
    {
        "resourceType": "CarePlan",
        "id": "cp2",
        "status": "completed",
        "intent": "plan",
        "subject": {"reference": "Patient/p2"},
        "period": {"start": "2025-06-01"},
    },
    {
        "resourceType": "CarePlan",
        "id": "cp3",
        "status": "active",
        "intent": "order",
        "subject": {"reference": "http://other.example.org/fhir/Patient/p9"},
    },
]

OBSERVATIONS = [
    {
        "resourceType": "Observation",
        "id": f"o{n}",
        "status": "final",
        "code": {"text": "weight"},
        "subject": {"reference": "Patient/p1"},
        "valueQuantity": {"value": value, "unit": "kg", "system": "http://unitsofmeasure.org", "code": "kg"},
    }
    for n, value in ((1, 60), (2, 72.5), (3, 100))
]


@pytest.fixture
async def data(client: httpx.AsyncClient) -> httpx.AsyncClient:
    return await put_all(client, [*PATIENTS, *PLANS, *OBSERVATIONS])


async def test_token_forms(data: httpx.AsyncClient) -> None:
    assert await ids(data, "CarePlan?status=active") == ["cp1", "cp3"]
    assert await ids(data, "CarePlan?status=active,completed") == ["cp1", "cp2", "cp3"]
    assert await ids(data, "CarePlan?status=active&intent=order") == ["cp3"]
    assert await ids(data, "Patient?identifier=urn:mrn|100") == ["p1"]
    assert await ids(data, "Patient?identifier=100") == ["p1"]
    assert await ids(data, "Patient?identifier=|200") == ["p2"]
    assert await ids(data, "Patient?identifier=urn:mrn|") == ["p1"]
    assert await ids(data, "Patient?identifier=urn:other|a\\,b") == ["p1"]
    assert await ids(data, "Patient?active=true") == ["p1"]
    assert await ids(data, "Patient?gender:not=male") == ["p1"]
    assert await ids(data, "CarePlan?category:text=care") == ["cp1"]
    assert await ids(data, "Patient?email=anna@example.org") == ["p1"]


async def test_string_matching(data: httpx.AsyncClient) -> None:
    assert await ids(data, "Patient?name=smith") == ["p2", "p3"]
    assert await ids(data, "Patient?family=MULLER") == ["p1"]
    assert await ids(data, "Patient?name:exact=Smith") == ["p2"]
    assert await ids(data, "Patient?name:exact=smith") == []
    assert await ids(data, "Patient?name:contains=ith") == ["p2", "p3"]
    assert await ids(data, "Patient?given=ann") == ["p1"]


async def test_reference_forms(data: httpx.AsyncClient) -> None:
    assert await ids(data, "CarePlan?subject=Patient/p1") == ["cp1"]
    assert await ids(data, "CarePlan?patient=p2") == ["cp2"]
    assert await ids(data, "CarePlan?subject:Patient=p1") == ["cp1"]
    assert await ids(data, "CarePlan?subject=http://other.example.org/fhir/Patient/p9") == ["cp3"]
    assert await ids(data, "Observation?subject=Patient/p1") == ["o1", "o2", "o3"]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("Patient?birthdate=1970-03-15", ["p1"]),
        ("Patient?birthdate=1970", ["p1"]),
        ("Patient?birthdate=eq1985-06-01", []),
        ("Patient?birthdate=ne1970-03-15", ["p2"]),
        ("Patient?birthdate=gt1980", ["p2"]),
        ("Patient?birthdate=lt1980", ["p1"]),
        ("Patient?birthdate=ge1985-06-01", ["p2"]),
        ("Patient?birthdate=le1970-03-15", ["p1"]),
        ("Patient?birthdate=sa1971", ["p2"]),
        ("Patient?birthdate=eb1971", ["p1"]),
        ("CarePlan?date=2026-02", []),
        ("CarePlan?date=ge2026-02-01", ["cp1", "cp2"]),
        ("CarePlan?date=le2025-12-31", ["cp2"]),
        ("CarePlan?date=sa2025-12-31", ["cp1"]),
        ("CarePlan?date=ge2026-01-01T00:00:00Z&date=lt2027", ["cp1", "cp2"]),
        ("CarePlan?date=2026-01-01T00:00:00Z", []),
    ],
)
async def test_date_prefixes(data: httpx.AsyncClient, query: str, expected: list[str]) -> None:
    assert await ids(data, query) == expected


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("Observation?value-quantity=72.5", ["o2"]),
        ("Observation?value-quantity=72", []),
        ("Observation?value-quantity=gt70", ["o2", "o3"]),
        ("Observation?value-quantity=le72.5", ["o1", "o2"]),
        ("Observation?value-quantity=ne100", ["o1", "o2"]),
        ("Observation?value-quantity=ap95", ["o3"]),
        ("Observation?value-quantity=100|http://unitsofmeasure.org|kg", ["o3"]),
        ("Observation?value-quantity=100||kg", ["o3"]),
        ("Observation?value-quantity=100|http://unitsofmeasure.org|g", []),
        ("Observation?value-quantity=1e2", ["o1", "o2", "o3"]),  # one significant figure: [50, 150)
    ],
)
async def test_quantity_prefixes(data: httpx.AsyncClient, query: str, expected: list[str]) -> None:
    assert await ids(data, query) == expected


async def test_uri_modifiers(data: httpx.AsyncClient) -> None:
    uri = "http://example.org/protocols/heart-failure/v2"
    assert await ids(data, f"CarePlan?instantiates-uri={uri}") == ["cp1"]
    assert await ids(data, "CarePlan?instantiates-uri:below=http://example.org/protocols") == ["cp1"]
    assert await ids(data, f"CarePlan?instantiates-uri:above={uri}/extra") == ["cp1"]
    assert await ids(data, "CarePlan?instantiates-uri=http://example.org/protocols") == []


async def test_id_last_updated_and_missing(data: httpx.AsyncClient) -> None:
    assert await ids(data, "Patient?_id=p1,p3") == ["p1", "p3"]
    assert await ids(data, "Patient?_lastUpdated=ge2000-01-01") == ["p1", "p2", "p3"]
    assert await ids(data, "Patient?_lastUpdated=lt2000-01-01") == []
    assert await ids(data, "Patient?birthdate:missing=true") == ["p3"]
    assert await ids(data, "Patient?birthdate:missing=false") == ["p1", "p2"]
    assert await ids(data, "CarePlan?instantiates-uri:missing=true") == ["cp2", "cp3"]


async def test_updates_and_deletes_change_what_is_found(data: httpx.AsyncClient) -> None:
    plan = {**PLANS[1], "status": "active"}
    await data.put("/fhir/CarePlan/cp2", json=plan, headers=FHIR_JSON_HEADERS)
    assert await ids(data, "CarePlan?status=completed") == []
    assert await ids(data, "CarePlan?status=active") == ["cp1", "cp2", "cp3"]
    await data.delete("/fhir/CarePlan/cp1")
    assert await ids(data, "CarePlan?status=active") == ["cp2", "cp3"]
    assert await ids(data, "CarePlan?subject=Patient/p1") == []


async def test_paging_walks_every_match_once_and_self_shows_applied(data: httpx.AsyncClient) -> None:
    goals = [
        {
            "resourceType": "Goal",
            "id": f"g{n}",
            "lifecycleStatus": "active",
            "description": {"text": "walk"},
            "subject": {"reference": "Patient/p1"},
        }
        for n in range(7)
    ]
    await put_all(data, goals)
    seen: list[str] = []
    url: str | None = "/fhir/Goal?lifecycle-status=active&_count=3&bogus=1&_total=accurate"
    first = True
    while url:
        bundle = (await data.get(url)).json()
        assert bundle["total"] == 7
        if first:
            self_link = bundle["link"][0]["url"]
            assert self_link == f"{TEST_BASE_URL}/Goal?lifecycle-status=active&_count=3&_total=accurate"
            first = False
        seen += [e["resource"]["id"] for e in bundle.get("entry", [])]
        nxt = [link["url"] for link in bundle["link"] if link["relation"] == "next"]
        url = "/fhir" + nxt[0][len(TEST_BASE_URL) :] if nxt else None
    assert sorted(seen) == [f"g{n}" for n in range(7)]


async def test_post_search_equals_get(data: httpx.AsyncClient) -> None:
    get = await ids(data, "Patient?name=smith&gender=male")
    response = await data.post("/fhir/Patient/_search", data={"name": "smith", "gender": "male"})
    assert sorted(e["resource"]["id"] for e in response.json().get("entry", [])) == get == ["p2", "p3"]


@pytest.mark.parametrize(
    ("query", "name"),
    [
        ("Patient?birthdate=yesterday", "birthdate"),
        ("Patient?birthdate=2020-13-01", "birthdate"),
        ("Patient?name:fuzzy=x", "name:fuzzy"),
        ("Observation?value-quantity=abc", "value-quantity"),
        ("Patient?birthdate:missing=maybe", "birthdate:missing"),
        ("Patient?_count=-1", "_count"),
        ("Patient?_page=@@@", "_page"),
    ],
)
async def test_malformed_values_are_400_naming_the_parameter(data: httpx.AsyncClient, query: str, name: str) -> None:
    response = await data.get(f"/fhir/{query}")
    assert response.status_code == 400, response.text
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["expression"] == [name]


async def test_unknown_parameters_lenient_or_strict(data: httpx.AsyncClient) -> None:
    assert await ids(data, "Patient?colour=blue&gender=female") == ["p1"]
    strict = await data.get("/fhir/Patient?colour=blue", headers={"Prefer": "handling=strict"})
    assert strict.status_code == 400
    assert "colour" in strict.json()["issue"][0]["diagnostics"]


async def test_conditional_create_uses_full_search(data: httpx.AsyncClient) -> None:
    headers = {**FHIR_JSON_HEADERS, "If-None-Exist": "family=smithers&gender=male"}
    response = await data.post("/fhir/Patient", json={"resourceType": "Patient"}, headers=headers)
    assert response.status_code == 200
    assert response.json()["id"] == "p3"
    headers["If-None-Exist"] = "family=smith"
    assert (await data.post("/fhir/Patient", json={"resourceType": "Patient"}, headers=headers)).status_code == 412


async def ordered(client: httpx.AsyncClient, query: str) -> list[str]:
    """Ids in the order served, following ``next`` links one match per page."""
    seen: list[str] = []
    url: str | None = f"/fhir/{query}"
    while url:
        response = await client.get(url)
        assert response.status_code == 200, response.text
        bundle = response.json()
        seen += [e["resource"]["id"] for e in bundle.get("entry", [])]
        nxt = [link["url"] for link in bundle["link"] if link["relation"] == "next"]
        url = "/fhir" + nxt[0][len(TEST_BASE_URL) :] if nxt else None
    return seen


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("Patient?_sort=birthdate", ["p1", "p2", "p3"]),
        ("Patient?_sort=-birthdate", ["p2", "p1", "p3"]),
        ("Patient?_sort=family", ["p1", "p2", "p3"]),
        ("Patient?_sort=-family", ["p3", "p2", "p1"]),
        ("Patient?_sort=gender,-_id", ["p1", "p3", "p2"]),
        ("Patient?_sort=-_id", ["p3", "p2", "p1"]),
        ("CarePlan?_sort=-date", ["cp2", "cp1", "cp3"]),  # cp2 has an open end
        ("CarePlan?_sort=status,date", ["cp1", "cp3", "cp2"]),
        ("Observation?_sort=-value-quantity", ["o3", "o2", "o1"]),
    ],
)
async def test_sort_orders_and_pages_by_keyset(data: httpx.AsyncClient, query: str, expected: list[str]) -> None:
    assert await ordered(data, f"{query}&_count=1") == expected
    assert await ordered(data, f"{query}&_count=2") == expected
    first = (await data.get(f"/fhir/{query}")).json()
    assert [e["resource"]["id"] for e in first.get("entry", [])] == expected


async def test_sort_by_last_updated_and_bad_sort(data: httpx.AsyncClient) -> None:
    assert await ordered(data, "Patient?_sort=-_lastUpdated&_count=1") == ["p3", "p2", "p1"]
    self_link = (await data.get("/fhir/Patient?_sort=nope,-birthdate")).json()["link"][0]["url"]
    assert "_sort=-birthdate" in self_link
    strict = await data.get("/fhir/Patient?_sort=nope", headers={"Prefer": "handling=strict"})
    assert strict.status_code == 400
    assert strict.json()["issue"][0]["expression"] == ["_sort"]
    other_cursor = (await data.get("/fhir/Patient?_count=1")).json()["link"][1]["url"].split("_page=")[1]
    mismatched = await data.get(f"/fhir/Patient?_sort=birthdate&_count=1&_page={other_cursor}")
    assert mismatched.status_code == 400
