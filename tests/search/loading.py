"""Loading test resources under their own ids (update-as-create), for the search tests."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import httpx

from tests.conftest import FHIR_JSON_HEADERS


async def put_all(client: httpx.AsyncClient, resources: Iterable[dict[str, Any]]) -> httpx.AsyncClient:
    for resource in resources:
        url = f"/fhir/{resource['resourceType']}/{resource['id']}"
        response = await client.put(url, json=resource, headers=FHIR_JSON_HEADERS)
        assert response.status_code == 201, response.text
    return client
