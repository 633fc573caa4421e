"""Random transaction and batch Bundles: all or nothing, and an answer for every batch entry (http.html#transaction)."""

from __future__ import annotations

import base64
import json
import re
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from hypothesis import event, given
from hypothesis import strategies as st

from tests.api.fuzzing import (
    CONDITIONS,
    FUZZ,
    URNS,
    answer,
    check_outcome,
    criteria,
    fresh_store,
    json_values,
    patch_operations,
    store_state,
)
from tests.conftest import FHIR_JSON_HEADERS

# Bodies nested thousands deep are meant to be large; hypothesis warns when it prints one.
pytestmark = pytest.mark.filterwarnings("ignore:Generating overly large repr")

URL_SHAPES = [
    "{t}", "{t}/{id}", "{t}/{id}/_history/{v}", "{t}?{q}", "{t}/{id}?{q}", "http://other.example/fhir/{t}/{id}",
    "http://testserver/fhir/{t}/{id}", "http://testserver/fhir/{t}?{q}", "/{t}/{id}", "{t}/_history",
    "{t}/{id}/_history", "{t}/_search?{q}", "{t}/$validate", "metadata", "_history", "", " ", "?{q}", "{t}/{id}/{t}",
]  # fmt: skip
ETAGS = ['W/"1"', '"1"', "1", 'W/"²"', "*", 'W/"99999999999"', "W/", ""]
INSTANTS = [
    "2099-01-01T00:00:00Z", "0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59.999999-12:00", "2020-02-30T00:00:00Z",
    "2020-01-01", "Mon, 30 Nov 2099 15:14:02 GMT", "Mon, 30 Nov 2009 15:14:02 -0000", "yesterday", "",
]  # fmt: skip
REFERENCES = [
    *URNS, "urn:uuid:00000000-dead-4000-8000-000000000000", "Patient/p1", "Patient/ghost", "Patient?identifier=urn:a|x",
    "Patient?identifier=urn:a|nobody", "http://other.example/Patient/1",
]  # fmt: skip
wrong_types = st.sampled_from([123, -1, 1.5, True, ["x"], {"a": 1}])


def optional(values: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """A value or, as often, none (the field is then left out)."""
    return st.one_of(st.none(), values)


def base64_text(data: bytes) -> str:
    return base64.b64encode(data).decode()


def json_patch_binary(data: str) -> dict[str, Any]:
    return {"resourceType": "Binary", "contentType": "application/json-patch+json", "data": data}


@st.composite
def request_urls(draw: st.DrawFn) -> str:
    return draw(st.sampled_from(URL_SHAPES)).format(
        t=draw(st.sampled_from(["Patient", "Task", "Observation", "patient", "Unknown", "Bundle"])),
        id=draw(st.sampled_from(["p1", "t1", "ghost", "new-1", "\u0661", "a_b", "x" * 65])),
        v=draw(st.sampled_from(["1", "2", "²", "0", "-1", "99999999999", "x"])),
        q=draw(criteria),
    )


@st.composite
def entry_requests(draw: st.DrawFn) -> Any:
    if draw(st.integers(0, 19)) == 19:
        return draw(st.sampled_from(["GET Patient", ["GET", "Patient"], 5]))
    methods = st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "get", "FOO", "", 5, ["GET"]])
    fields = {
        "method": draw(optional(methods)),
        "url": draw(optional(st.one_of(request_urls(), st.sampled_from([7, ["Patient"]])))),
        "ifNoneExist": draw(optional(st.one_of(criteria, wrong_types))),
        "ifMatch": draw(optional(st.one_of(st.sampled_from(ETAGS), wrong_types))),
        "ifNoneMatch": draw(optional(st.one_of(st.sampled_from(ETAGS), wrong_types))),
        "ifModifiedSince": draw(optional(st.one_of(st.sampled_from(INSTANTS), st.text(max_size=10), wrong_types))),
    }
    return {key: value for key, value in fields.items() if value is not None}


binary_data = st.one_of(
    st.lists(patch_operations, max_size=3).map(lambda ops: base64_text(json.dumps(ops).encode())),
    json_values.map(lambda value: base64_text(json.dumps(value).encode())),
    st.binary(max_size=20).map(base64_text),
    st.sampled_from(["not base64!", "QQ", "", "e30="]),
)


@st.composite
def entry_resources(draw: st.DrawFn) -> Any:
    """Small valid Patients and Tasks, broken ones, and PATCH documents."""
    reference = {"reference": draw(st.sampled_from(REFERENCES))}
    operation = {"name": "operation", "part": [{"name": "type", "valueCode": "add"}]}
    fixed = st.sampled_from(
        [
            {"resourceType": "Patient", "active": True},
            {"resourceType": "Patient", "identifier": [{"system": "urn:a", "value": "x"}]},
            {"resourceType": "Patient", "id": "p1", "gender": "male"},
            {"resourceType": "Patient", "link": [{"other": reference, "type": "seealso"}]},
            {"resourceType": "Task", "status": "ready", "intent": "order", "for": reference},
            {"resourceType": "Task", "id": "t1", "status": "cancelled", "intent": "order"},
            {"resourceType": "Observation", "status": "final", "code": {"text": "x"}, "subject": reference},
            {"resourceType": "Patient", "gender": 5}, {"resourceType": "Task"}, {"resourceType": "Nope"},
            {"resourceType": "Patient", "meta": {"versionId": "7"}},
            {"resourceType": "Parameters", "parameter": [operation]}, "Patient", 5,
        ]
    )  # fmt: skip
    return draw(fixed | binary_data.map(json_patch_binary))


@st.composite
def sound_entries(draw: st.DrawFn) -> dict[str, Any]:
    """An entry whose method, url and resource agree, so that whole transactions get through often enough."""
    resource_id = draw(st.sampled_from(["p1", "ghost", "new-1"]))
    patient: dict[str, Any] = {"resourceType": "Patient", "active": draw(st.booleans())}
    subject = {"reference": draw(st.sampled_from(REFERENCES))}
    task = {"resourceType": "Task", "status": "ready", "intent": "order", "for": subject}
    binary = json_patch_binary(base64_text(json.dumps([draw(patch_operations)]).encode()))
    condition = draw(st.sampled_from(CONDITIONS))
    method, url, resource = draw(
        st.sampled_from(
            [
                ("POST", "Patient", patient), ("POST", "Task", task),
                ("PUT", f"Patient/{resource_id}", {**patient, "id": resource_id}),
                ("PUT", f"Patient?{condition}", patient),
                ("GET", f"Patient/{resource_id}", None), ("GET", f"Patient?{condition}", None),
                ("GET", "Patient/p1/_history/1", None), ("DELETE", f"Patient/{resource_id}", None),
                ("DELETE", f"Task?{condition}", None), ("PATCH", f"Patient/{resource_id}", binary),
            ]
        )
    )  # fmt: skip
    entry: dict[str, Any] = {"request": {"method": method, "url": url}}
    if resource is not None:
        entry["resource"] = resource
    if method == "POST":
        entry["fullUrl"] = draw(st.sampled_from(URNS))
        if draw(st.booleans()):
            entry["request"]["ifNoneExist"] = condition
    return entry


@st.composite
def bundle_entries(draw: st.DrawFn) -> dict[str, Any]:
    """Any mix of fullUrl, resource and request, each possibly of the wrong JSON type."""
    if draw(st.booleans()):
        return draw(sound_entries())
    full_urls = st.sampled_from([*URNS, "urn:uuid:not-a-uuid", "http://testserver/fhir/Patient/p1", "Patient/p1", 3])
    fields = {"fullUrl": draw(optional(full_urls)), "resource": draw(optional(entry_resources()))}
    fields["request"] = draw(optional(entry_requests())) or None
    return {key: value for key, value in fields.items() if value is not None}


def duplicate_full_urls(entries: list[dict[str, Any]]) -> bool:
    """bdl-7: a fullUrl appears once in a Bundle; a batch breaking that may be refused as a whole."""
    seen = [e["fullUrl"] for e in entries if isinstance(e.get("fullUrl"), str)]
    return len(seen) != len(set(seen))


def response_statuses(response: httpx.Response, kind: str, entries: list[dict[str, Any]]) -> list[int]:
    """One response entry per request entry, each with a status and, when it failed, an OperationOutcome."""
    body = response.json()
    assert body["resourceType"] == "Bundle" and body["type"] == f"{kind}-response", body
    answered = body.get("entry", [])
    assert len(answered) == len(entries), (len(answered), len(entries))
    statuses = []
    for index, item in enumerate(answered):
        status = item["response"]["status"]
        assert re.fullmatch(r"[1-5]\d\d( .*)?", status), status
        code = int(status[:3])
        assert code < 500, (index, entries[index], item)
        if code >= 400:
            assert "outcome" in item["response"], (index, entries[index], item)
            check_outcome(item["response"]["outcome"], f"Bundle.entry[{index}]")
        statuses.append(code)
    return statuses


@FUZZ
@given(
    kind=st.sampled_from(["transaction", "batch"]),
    entries=st.lists(sound_entries(), max_size=6) | st.lists(bundle_entries(), max_size=6),
)
async def test_random_transactions_are_all_or_nothing_and_batches_answer_every_entry(
    app: FastAPI, client: httpx.AsyncClient, kind: str, entries: list[dict[str, Any]]
) -> None:
    await fresh_store(app, client)
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": kind}
    if entries:
        bundle["entry"] = entries
    before = await store_state(client)
    response = await answer(client, "POST", "/fhir", json.dumps(bundle).encode(), FHIR_JSON_HEADERS)
    event(f"{kind} {response.status_code}")
    if kind == "transaction":
        if response.status_code == 200:  # http.html#transaction: all actions succeed, or the whole is refused
            statuses = response_statuses(response, kind, entries)
            assert all(code < 400 for code in statuses), ("a transaction succeeded with a failed entry", statuses)
        return
    if response.status_code >= 400:
        assert duplicate_full_urls(entries), ("a batch was refused whole", response.status_code, response.text[:500])
        return
    assert response.status_code == 200, response.status_code
    statuses = response_statuses(response, kind, entries)
    if all(code >= 400 for code in statuses):
        assert await store_state(client) == before, ("a batch whose entries all failed stored something", statuses)


# ---------------------------------------------------------------- 3. search and history
