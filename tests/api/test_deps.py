"""The request context reaches every route through one overridable dependency; the process context is
immutable and replaced whole."""

from __future__ import annotations

import dataclasses

import httpx
import pytest
from fastapi import FastAPI
from starlette.requests import Request

from app.api.deps import RouteContext, route_context
from app.interactions.request_context import Caller
from tests.conftest import FHIR_JSON_HEADERS


async def test_a_test_can_replace_the_request_context(app: FastAPI, client: httpx.AsyncClient) -> None:
    seen: list[RouteContext] = []

    async def elsewhere(request: Request) -> RouteContext:
        base = await route_context(request)
        replaced = dataclasses.replace(
            base, rc=dataclasses.replace(base.rc, base_url="https://fhir.example.org/r4", caller=Caller("tester"))
        )
        seen.append(replaced)
        return replaced

    app.dependency_overrides[route_context] = elsewhere
    try:
        created = await client.post(
            "/fhir/Patient", json={"resourceType": "Patient", "active": True}, headers=FHIR_JSON_HEADERS
        )
    finally:
        app.dependency_overrides.clear()
    assert created.headers["location"].startswith("https://fhir.example.org/r4/Patient/")
    assert seen and seen[0].rc.caller.name == "tester"


async def test_prefer_and_strict_handling_come_from_the_headers(app: FastAPI, client: httpx.AsyncClient) -> None:
    captured: list[RouteContext] = []

    async def capture(request: Request) -> RouteContext:
        context = await route_context(request)
        captured.append(context)
        return context

    app.dependency_overrides[route_context] = capture
    try:
        await client.get("/fhir/Patient", headers={"Prefer": "return=minimal, handling=strict"})
    finally:
        app.dependency_overrides.clear()
    rc = captured[0].rc
    assert (rc.prefer_return, rc.strict, rc.caller.unrestricted) == ("minimal", True, True)
    assert rc.base_url == "http://testserver/fhir"


async def test_the_process_context_is_immutable_and_replaced_whole(app: FastAPI, client: httpx.AsyncClient) -> None:
    holder = app.state.fhir
    before = holder.current
    with pytest.raises(dataclasses.FrozenInstanceError):
        before.registry = before.base_registry  # type: ignore[misc]
    parameter = {
        "resourceType": "SearchParameter",
        "url": "http://example.org/fhir/SearchParameter/patient-nick",
        "name": "Nick",
        "status": "active",
        "description": "nickname",
        "code": "nick",
        "base": ["Patient"],
        "type": "string",
        "expression": "Patient.name.where(use = 'nickname').given",
    }
    assert (await client.post("/fhir/SearchParameter", json=parameter, headers=FHIR_JSON_HEADERS)).status_code == 201
    after = holder.current
    assert after is not before
    assert after.registry.get("Patient", "nick") is not None
    assert before.registry.get("Patient", "nick") is None  # a request that began earlier keeps its registry
    assert after.extractor.registry is after.registry
