"""The FHIR interaction routes are called without FastAPI's dependency solving, and answer exactly as
through it."""

from __future__ import annotations

from typing import Annotated

import httpx
from fastapi import Depends, FastAPI, Header
from starlette.requests import Request
from starlette.responses import Response

from app.api.deps import Ctx, Jobs, route_context
from app.api.fhir_route import FhirRoute, lean_parameters
from tests.conftest import FHIR_JSON_HEADERS


def lean_routes(app: FastAPI) -> dict[tuple[str, str], tuple[str, str] | None]:
    """(method, path) -> what the lean handler passes, or None where FastAPI's handler runs."""
    found = {}
    for route in app.routes:
        if isinstance(route, FhirRoute):
            for method in route.methods:
                found[(method, route.path)] = lean_parameters(route.dependant)
    return found


def test_the_interactions_skip_dependency_solving_and_the_reindex_operations_do_not(app: FastAPI) -> None:
    routes = lean_routes(app)
    lean = ("request", "ctx")
    assert routes[("GET", "/fhir/{resource_type:rtype}/{resource_id:rid}")] == lean  # read
    assert routes[("GET", "/fhir/{resource_type:rtype}")] == lean  # search
    assert routes[("POST", "/fhir/{resource_type:rtype}")] == lean  # create
    assert routes[("PUT", "/fhir/{resource_type:rtype}/{resource_id:rid}")] == lean  # update
    assert routes[("POST", "/fhir")] == lean  # transaction and batch
    assert routes[("POST", "/fhir/$reindex")] is None  # it also needs the job runner
    assert sum(value == lean for value in routes.values()) >= 20


async def endpoint_of_the_shape(request: Request, resource_type: str, ctx: Ctx) -> Response:
    return Response(resource_type)


async def with_a_query_parameter(request: Request, resource_type: str, ctx: Ctx, count: int = 1) -> Response:
    return Response(resource_type)


async def with_a_header(request: Request, ctx: Ctx, prefer: Annotated[str, Header()] = "") -> Response:
    return Response(prefer)


async def with_two_dependencies(request: Request, ctx: Ctx, jobs: Jobs) -> Response:
    return Response()


async def with_an_int_segment(request: Request, number: int, ctx: Ctx) -> Response:
    return Response(str(number))


async def without_the_request(resource_type: str, ctx: Ctx) -> Response:
    return Response(resource_type)


async def another_dependency(request: Request) -> str:
    return "other"


async def with_another_single_dependency(
    request: Request, other: Annotated[str, Depends(another_dependency)]
) -> Response:
    return Response(other)


def test_any_other_signature_keeps_fastapis_handler() -> None:
    def shape(endpoint: object, path: str = "/{resource_type}") -> tuple[str, str] | None:
        route = FhirRoute(path, endpoint, methods=["GET"])  # type: ignore[arg-type]
        return lean_parameters(route.dependant)

    assert shape(endpoint_of_the_shape) == ("request", "ctx")
    assert shape(with_a_query_parameter) is None
    assert shape(with_a_header, "/x") is None
    assert shape(with_two_dependencies, "/x") is None
    assert shape(with_an_int_segment, "/{number}") is None
    assert shape(without_the_request) is None
    assert shape(with_another_single_dependency, "/x") is None
    route = FhirRoute("/x", endpoint_of_the_shape, methods=["GET"], dependencies=[Depends(another_dependency)])
    assert lean_parameters(route.dependant) is None  # a route-level dependency (the unsupported operations')


async def test_a_lean_read_and_search_answer_as_fastapis_handler_does(app: FastAPI, client: httpx.AsyncClient) -> None:
    plan = {"resourceType": "CarePlan", "status": "active", "intent": "plan", "subject": {"reference": "Patient/p1"}}
    created = await client.post("/fhir/CarePlan", json=plan, headers=FHIR_JSON_HEADERS)
    assert created.status_code == 201, created.text
    plan_id = created.json()["id"]
    urls = [f"/fhir/CarePlan/{plan_id}", "/fhir/CarePlan?subject=Patient/p1", "/fhir/CarePlan/missing"]

    async def answers() -> list[tuple[int, str | None, str | None, object]]:
        got: list[tuple[int, str | None, str | None, object]] = []
        for url in urls:
            response = await client.get(url)
            body = response.json()
            if body["resourceType"] == "Bundle":  # a new searchset each time: its id and instant differ
                body = body["entry"]
            got.append((response.status_code, response.headers.get("etag"), response.headers.get("content-type"), body))
        return got

    lean = await answers()
    app.dependency_overrides[route_context] = route_context  # any override: FastAPI's handler
    try:
        full = await answers()
    finally:
        app.dependency_overrides.clear()
    assert [answer[0] for answer in lean] == [200, 200, 404]
    match = {
        "fullUrl": created.headers["location"].split("/_history")[0],
        "resource": created.json(),
        "search": {"mode": "match"},
    }
    assert lean[0][3] == created.json() and lean[1][3] == [match]
    assert lean == full
