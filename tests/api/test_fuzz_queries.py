"""Random query strings for search and history get a Bundle or a clean refusal (search.html)."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI
from hypothesis import event, given
from hypothesis import strategies as st

from tests.api.fuzzing import FUZZ, SEARCH_TYPES, answer, fresh_store, query_strings

# Bodies nested thousands deep are meant to be large; hypothesis warns when it prints one.
pytestmark = pytest.mark.filterwarnings("ignore:Generating overly large repr")


@st.composite
def searches(draw: st.DrawFn) -> tuple[str, str, bytes | None, dict[str, str]]:
    """(method, url, form body, headers) of a search or history request."""
    resource_type = draw(st.sampled_from(SEARCH_TYPES))
    query = draw(query_strings())
    headers = {"Prefer": "handling=strict"} if draw(st.booleans()) else {}
    paths = {
        "type": f"/fhir/{resource_type}",
        "system": "/fhir",
        "history": "/fhir/_history",
        "type-history": f"/fhir/{resource_type}/_history",
        "compartment": f"/fhir/Patient/p1/{resource_type}",
        "post": f"/fhir/{resource_type}/_search",
    }
    target = draw(st.sampled_from(sorted(paths)))
    if target == "post":
        headers["Content-Type"] = "application/x-www-form-urlencoded"
        return "POST", paths[target], query.encode(), headers
    return "GET", f"{paths[target]}?{query}", None, headers


@FUZZ
@given(search=searches())
async def test_random_queries_get_a_bundle_or_a_clean_refusal(
    app: FastAPI, client: httpx.AsyncClient, search: tuple[str, str, bytes | None, dict[str, str]]
) -> None:
    method, url, body, headers = search
    await fresh_store(app, client)
    response = await answer(client, method, url, body, headers)
    event(str(response.status_code))
    assert response.status_code == 200 or 400 <= response.status_code < 500, response.status_code
    if response.status_code != 200:
        return
    bundle = response.json()
    assert bundle["resourceType"] == "Bundle" and bundle["type"] in ("searchset", "history"), bundle
    following = [link["url"] for link in bundle.get("link", []) if link["relation"] == "next"]
    if following:  # the server's own paging link works too
        page = await answer(client, "GET", following[0], None, {})
        assert page.status_code == 200, (following[0], page.status_code, page.text[:500])
