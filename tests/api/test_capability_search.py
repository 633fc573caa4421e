"""Every search parameter the CapabilityStatement declares finds the resource it was indexed from."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from app.interactions.context import format_instant
from app.search.values import (
    DateValue,
    IndexValue,
    NumberValue,
    QuantityValue,
    ReferenceValue,
    StringValue,
    TokenValue,
    UriValue,
)
from tests.conftest import FHIR_JSON_HEADERS
from tests.examples import CARE_COORDINATION_TYPES, examples_of


def escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace(",", "\\,").replace("|", "\\|").replace("$", "\\$")


def query_value(value: IndexValue) -> str | None:
    """A search value that must match ``value`` (None when there is nothing to search by)."""
    if isinstance(value, TokenValue):
        if value.code is None:
            return None
        return f"{escape(value.system)}|{escape(value.code)}" if value.system else escape(value.code)
    if isinstance(value, StringValue):
        return escape(value.exact)
    if isinstance(value, ReferenceValue):
        if value.target_type and value.target_id:
            return f"{value.target_type}/{escape(value.target_id)}"
        return escape(value.url) if value.url else None
    if isinstance(value, DateValue):
        return "ge" + format_instant(value.low) if value.low.year > 1 else None
    if isinstance(value, NumberValue | QuantityValue):
        return str(value.value)
    if isinstance(value, UriValue):
        return escape(value.value)
    return None


def composite_values(app: Any, resource_type: str, body: dict[str, Any]) -> list[tuple[str, str]]:
    """(code, ``a$b`` value) for each indexed combination of each composite parameter."""
    owners = {
        component.hash: (param.code, index)
        for param in app.state.fhir.current.registry.for_type(resource_type).values()
        for index, component in enumerate(param.components)
    }
    combos: dict[tuple[str, int], dict[int, str | None]] = {}
    for component_hash, value, combo in app.state.fhir.current.extractor.extract_composites(resource_type, body):
        code, index = owners[component_hash]
        combos.setdefault((code, combo), {})[index] = query_value(value)
    return [
        (code, "$".join(parts[i] for i in sorted(parts)))  # type: ignore[misc]
        for (code, _), parts in combos.items()
        if None not in parts.values()
    ]


@pytest.mark.parametrize("resource_type", [*CARE_COORDINATION_TYPES, "Observation", "DocumentReference"])
async def test_each_declared_parameter_finds_its_resource(
    client: httpx.AsyncClient, app: Any, resource_type: str
) -> None:
    statement = (await client.get("/fhir/metadata")).json()
    entry = next(r for r in statement["rest"][0]["resource"] if r["type"] == resource_type)
    declared = {p["name"]: p for p in entry["searchParam"]}
    assert {"_id", "_lastUpdated"} <= set(declared)
    extractor = app.state.fhir.current.extractor
    exercised = set()
    for _, example in examples_of(resource_type):
        created = await client.post(f"/fhir/{resource_type}", json=example, headers=FHIR_JSON_HEADERS)
        assert created.status_code == 201
        rid = created.json()["id"]
        for param, value in extractor.extract(resource_type, created.json()):
            assert param.code in declared, f"{param.code} is indexed but not declared"
            assert declared[param.code]["type"] == param.type
            wanted = query_value(value)
            if wanted is None:
                continue
            query = {param.code: wanted, "_count": "1000"}
            bundle = (await client.get(f"/fhir/{resource_type}", params=query)).json()
            ids = [e["resource"]["id"] for e in bundle.get("entry", [])]
            assert rid in ids, f"{resource_type}?{param.code}={wanted} did not find {rid}"
            exercised.add(param.code)
        for code, value in composite_values(app, resource_type, created.json()):
            bundle = (await client.get(f"/fhir/{resource_type}", params={code: value, "_count": "1000"})).json()
            assert rid in [e["resource"]["id"] for e in bundle.get("entry", [])], f"{code}={value} missed {rid}"
            exercised.add(code)
        missing_false = (await client.get(f"/fhir/{resource_type}?_id={rid}&_lastUpdated=ge2000")).json()
        assert [e["resource"]["id"] for e in missing_false.get("entry", [])] == [rid]
    assert exercised, "no declared parameter was exercised"
    for name in declared:
        response = await client.get(f"/fhir/{resource_type}?{name}:missing=false")
        assert response.status_code == 200, (name, response.text)
