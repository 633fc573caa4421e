"""Patient-record Bundles shaped like Synthea's load as one transaction each, references intact."""

from __future__ import annotations

from typing import Any

import httpx

from bench.synthea import encounters_for, patient_bundle, providers_bundle
from tests.conftest import FHIR_JSON_HEADERS


def references(value: Any, out: list[str]) -> list[str]:
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "reference" and isinstance(item, str):
                out.append(item)
            else:
                references(item, out)
    elif isinstance(value, list):
        for item in value:
            references(item, out)
    return out


async def load(client: httpx.AsyncClient, bundle: dict[str, Any]) -> dict[str, Any]:
    response = await client.post("/fhir", json=bundle, headers={**FHIR_JSON_HEADERS, "Prefer": "return=minimal"})
    assert response.status_code == 200, response.text[:2000]
    result: dict[str, Any] = response.json()
    return result


async def test_synthea_like_bundles_load_and_every_reference_resolves(client: httpx.AsyncClient) -> None:
    await load(client, providers_bundle())
    again = await load(client, providers_bundle())  # conditional creates: nothing new the second time
    assert {e["response"]["status"] for e in again.get("entry", [])} == {"200 OK"}
    for seed, size in ((1, 150), (2, 300), (3, 500)):
        bundle = patient_bundle(seed, encounters_for(size))
        assert 150 <= len(bundle["entry"]) <= 520
        result = await load(client, bundle)
        locations = [e["response"]["location"].rsplit("/_history/", 1)[0] for e in result.get("entry", [])]
        assert all(e["response"]["status"] == "201 Created" for e in result.get("entry", []))
        patient = locations[0]
        assert patient.startswith("Patient/")
        checked = set()
        for location in locations:
            stored = (await client.get(f"/fhir/{location}")).json()
            for reference in references(stored, []):
                assert not reference.startswith(("urn:", "Organization?", "Practitioner?")), reference
                if reference.startswith("#") or reference in checked:
                    continue
                assert (await client.get(f"/fhir/{reference}")).status_code == 200, f"{location} -> {reference}"
                checked.add(reference)
        plans = [
            loc.split("/")[1] for loc, e in zip(locations, bundle["entry"], strict=True) if loc.startswith("CarePlan/")
        ]
        assert plans and len(plans) == sum(
            1 for e in bundle.get("entry", []) if e["resource"]["resourceType"] == "CarePlan"
        )
        found = (await client.get(f"/fhir/CarePlan?subject={patient}&_count=1000")).json()
        assert sorted(e["resource"]["id"] for e in found.get("entry", [])) == sorted(plans)
    organizations = (await client.get("/fhir/Organization?_summary=count")).json()["total"]
    assert organizations == 5
