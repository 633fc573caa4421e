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
        return "ge" + format_instant(value.low).replace("+", "%2B") if value.low.year > 1 else None
    if isinstance(value, NumberValue | QuantityValue):
        return str(value.value)
    if isinstance(value, UriValue):
        return escape(value.value)
    return None


@pytest.mark.parametrize("resource_type", CARE_COORDINATION_TYPES)
async def test_each_declared_parameter_finds_its_resource(
    client: httpx.AsyncClient, app: Any, resource_type: str
) -> None:
    statement = (await client.get("/fhir/metadata")).json()
    entry = next(r for r in statement["rest"][0]["resource"] if r["type"] == resource_type)
    declared = {p["name"]: p for p in entry["searchParam"]}
    assert {"_id", "_lastUpdated"} <= set(declared)
    extractor = app.state.ctx.extractor
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
            bundle = (await client.get(f"/fhir/{resource_type}?{param.code}={wanted}&_count=1000")).json()
            ids = [e["resource"]["id"] for e in bundle.get("entry", [])]
            assert rid in ids, f"{resource_type}?{param.code}={wanted} did not find {rid}"
            exercised.add(param.code)
        missing_false = (await client.get(f"/fhir/{resource_type}?_id={rid}&_lastUpdated=ge2000")).json()
        assert [e["resource"]["id"] for e in missing_false["entry"]] == [rid]
    assert exercised, "no declared parameter was exercised"
    for name in declared:
        response = await client.get(f"/fhir/{resource_type}?{name}:missing=false")
        assert response.status_code == 200, (name, response.text)
