"""The HTTP floor: FastAPI routes that do no work, served like the real server."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import Response

BODY = b'{"resourceType":"CarePlan","id":"x","meta":{"versionId":"1"}}'


def create_app() -> FastAPI:
    app = FastAPI(openapi_url=None, docs_url=None)

    @app.post("/fhir/{resource_type}")
    async def create(request: Request, resource_type: str) -> Response:
        await request.body()
        return Response(BODY, status_code=201, media_type="application/fhir+json")

    @app.get("/fhir/{resource_type}/{resource_id}")
    async def read(resource_type: str, resource_id: str) -> Response:
        return Response(BODY, media_type="application/fhir+json")

    @app.put("/fhir/{resource_type}/{resource_id}")
    async def update(request: Request, resource_type: str, resource_id: str) -> Response:
        await request.body()
        return Response(BODY, media_type="application/fhir+json")

    @app.get("/health")
    async def health() -> Response:
        return Response(b'{"status":"ok"}')

    return app
