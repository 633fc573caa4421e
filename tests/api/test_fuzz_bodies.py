"""Random resource bodies, sent as raw JSON text, are stored or refused cleanly (json.html, http.html)."""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from fastapi import FastAPI
from hypothesis import event, given
from hypothesis import strategies as st

from tests.api.fuzzing import (
    COMMON,
    ELEMENTS,
    FUZZ,
    JSON_PATCH_HEADERS,
    TOO_DEEP,
    URNS,
    answer,
    any_json,
    criteria,
    deep_json,
    fresh_store,
    json_text,
    patch_operations,
    raw_bodies,
    raw_object,
    read_json,
    scalars,
)

# Bodies nested thousands deep are meant to be large; hypothesis warns when it prints one.
pytestmark = pytest.mark.filterwarnings("ignore:Generating overly large repr")

VALID = {  # right-looking values, some at the edges of what FHIR allows
    "active": ["true"],
    "gender": ['"female"', '"unknown"'],
    "birthDate": ['"1970-01-01"', '"2020"', '"0001-01-01"', '"9999-12-31"'],
    "name": ['[{"family":"Doe","given":["Jo"]}]', r'[{"family":"\ud83d\ude00 \u00e9","given":["  x  "]}]'],
    "identifier": ['[{"system":"urn:a","value":"x"}]', '[{"system":"http://other.example/ids","value":"a|b,c$d"}]'],
    "multipleBirthInteger": ["2147483647", "-2147483648"],
    "status": ['"requested"', '"active"', '"final"', '"collection"'],
    "intent": ['"order"', '"plan"'],
    "for": ['{"reference":"Patient/p1"}', f'{{"reference":"{URNS[0]}"}}'],
    "subject": ['{"reference":"Patient/p1"}', '{"reference":"Patient?identifier=urn:a|x"}'],
    "code": ['{"text":"x"}', '{"coding":[{"system":"http://loinc.org","code":"1234-5"}]}'],
    "authoredOn": ['"2026-01-01T10:00:00Z"', '"0001-01-01T00:00:00+14:00"', '"9999-12-31T23:59:59.999999-12:00"'],
    "issued": ['"2020-01-01T00:00:00.123456789Z"'],
    "valueQuantity": ['{"value":1.10,"unit":"mg"}', '{"value":12345678901234567.89}', '{"value":-0}', '{"value":1E-7}'],
    "valueInteger": ["7", "-0"],
    "valueString": [r'"\ud83d\ude00"', r'"a\tb"', '"x"'],
    "period": ['{"start":"2020-01-01","end":"2020-01-01"}'],
    "type": ['"collection"', '"document"', '"transaction"'],
    "entry": ['[{"fullUrl":"urn:uuid:x","resource":{"resourceType":"Patient"}}]'],
    "extension": ['[{"url":"http://x","valueString":"y"}]', '[{"url":"http://x","valueDecimal":0.10}]'],
    "meta": ['{"versionId":"7","lastUpdated":"2020-01-01T00:00:00Z","tag":[{"code":"t"}]}'],
    "text": ['{"status":"generated","div":"<div xmlns=\\"http://www.w3.org/1999/xhtml\\">x</div>"}'],
}
REQUIRED = {
    "Patient": {},
    "Task": {"status": '"requested"', "intent": '"order"'},
    "CarePlan": {"status": '"active"', "intent": '"plan"', "subject": '{"reference":"Patient/p1"}'},
    "Observation": {"status": '"final"', "code": '{"text":"x"}'},
    "Bundle": {"type": '"collection"'},
}


def choice_group(name: str) -> str:
    """valueQuantity, valueString... are one element, value[x], of which a resource holds one."""
    return "value[x]" if name.startswith("value") else name


@st.composite
def resource_texts(draw: st.DrawFn, resource_type: str, resource_id: str | None, tidy: bool) -> str:
    """A resource of ``resource_type`` as JSON text.

    Tidy: the right type and id and right-looking elements, so that some are stored. Otherwise wrong
    parts are mixed in: a missing, repeated or wrong resourceType or id, wrong JSON types, unknown keys.
    """
    if tidy:
        pairs = [("resourceType", json_text(resource_type)), *REQUIRED[resource_type].items()]
        pairs += [("id", json_text(resource_id))] if resource_id else []
        common = COMMON if resource_type != "Bundle" else ["meta", "language"]  # a Bundle is no DomainResource
        known = [name for name in ELEMENTS[resource_type] + common if name in VALID]
        chosen = draw(st.lists(st.sampled_from(known), max_size=5, unique_by=choice_group))
        pairs += [(name, draw(st.sampled_from(VALID[name]))) for name in chosen if name not in REQUIRED[resource_type]]
        return raw_object([(json_text(key), value) for key, value in pairs])
    if draw(st.integers(0, 9)) == 9:
        return draw(st.one_of(any_json, deep_json))
    kind = json_text(resource_type)
    pairs = draw(
        st.sampled_from(
            [[("resourceType", kind)], [], [("resourceType", '"patient"')], [("resourceType", "5")],
             [("resourceType", "null")], [("resourceType", '"Observation"')], [("resourceType", kind)] * 2,
             [("resourceType", kind), ("resourceType", '"Task"')]]
        )
    )  # fmt: skip
    if resource_id is not None:
        pairs += draw(st.sampled_from([[("id", json_text(resource_id))], [], [("id", '"other"')], [("id", "5")]]))
    for name in draw(st.lists(st.sampled_from(ELEMENTS[resource_type] + COMMON), max_size=6)):
        right_looking = st.sampled_from(VALID.get(name, ['"x"']))
        pairs.append((name, draw(st.one_of(right_looking, scalars, any_json, deep_json))))
    pairs += draw(st.lists(st.tuples(st.text(max_size=6), any_json), max_size=2))
    return raw_object([(json_text(key), value) for key, value in pairs])


def forbidden_empties(node: Any, in_object: bool = False) -> bool:
    """json.html: no property is null, and no object, array or string is empty."""
    if node is None:
        return in_object  # null inside an array may keep a primitive aligned with its extension
    if node in ({}, [], ""):
        return True
    if isinstance(node, dict):
        return any(forbidden_empties(value, True) for value in node.values())
    return isinstance(node, list) and any(forbidden_empties(value) for value in node)


def must_refuse(raw: bytes, resource_type: str, resource_id: str | None) -> str | None:
    """Why FHIR requires this resource body to be refused, or None when accepting it may be right."""
    doc, problem = read_json(raw)
    if problem or doc is TOO_DEEP:
        return problem
    if not isinstance(doc, dict) or doc.get("resourceType") != resource_type:
        return "not a resource of the url's type"
    if resource_id is not None and doc.get("id") != resource_id:
        return "no id, or not the url's id (http.html#update)"
    if resource_id is not None and not re.fullmatch(r"[A-Za-z0-9\-.]{1,64}", resource_id):
        return "not a valid id (datatypes.html#id)"
    return "null or empty value (json.html)" if forbidden_empties(doc) else None


RESOURCE_TYPES = ["Patient", "Task", "CarePlan", "Observation", "Bundle"]
IDS = ["p1", "t1", "new-1", "A.b-9", "x" * 64, "a_b", "x" * 65, "\u20ac", "a\u0661"]
CONTENT_TYPES = ["application/fhir+json", "application/json", "application/fhir+json; charset=utf-8", "text/plain"]
PREFER = ["return=representation", "return=minimal", "return=OperationOutcome"]
Write = tuple[str, str, bytes, dict[str, str], str | None]


@st.composite
def writes(draw: st.DrawFn) -> Write:
    """(method, url, body, headers, why it must be refused or None) of a create, update, conditional write or patch."""
    kind = draw(st.sampled_from(["create", "update", "create", "update", "patch", "conditional"]))
    if kind == "patch":
        raw = draw(raw_bodies(draw(st.one_of(st.lists(patch_operations, max_size=3).map(json.dumps), any_json))))
        url = f"/fhir/{draw(st.sampled_from(['Patient/p1', 'Task/t1', 'Patient/ghost']))}"
        return "PATCH", url, raw, JSON_PATCH_HEADERS, read_json(raw, unique_keys=False)[1]
    resource_type = draw(st.sampled_from(RESOURCE_TYPES))
    resource_id = draw(st.sampled_from(IDS)) if kind == "update" else None
    tidy = draw(st.booleans())
    text = draw(resource_texts(resource_type, resource_id, tidy))
    raw = text.encode() if tidy else draw(raw_bodies(text))
    content_type = CONTENT_TYPES[0] if tidy else draw(st.sampled_from(CONTENT_TYPES))
    headers = {"Content-Type": content_type}
    if draw(st.booleans()):
        headers["Prefer"] = draw(st.sampled_from(PREFER))
    reason = must_refuse(raw, resource_type, resource_id)
    if content_type == "text/plain":
        reason = reason or "not a FHIR media type"
    if kind == "update":
        return "PUT", f"/fhir/{resource_type}/{quote(resource_id or '')}", raw, headers, reason
    if kind == "create":
        return "POST", f"/fhir/{resource_type}", raw, headers, reason
    condition = draw(criteria)
    method = draw(st.sampled_from(["POST", "PUT", "DELETE"]))
    if method == "POST":
        return "POST", f"/fhir/{resource_type}", raw, {**headers, "If-None-Exist": condition}, reason
    if method == "PUT":
        return "PUT", f"/fhir/{resource_type}?{condition}", raw, headers, reason
    return "DELETE", f"/fhir/{resource_type}?{condition}", None, {}, None


@FUZZ
@given(write=writes())
async def test_random_resource_bodies_are_stored_or_refused_cleanly(
    app: FastAPI, client: httpx.AsyncClient, write: Write
) -> None:
    method, url, raw, headers, reason = write
    await fresh_store(app, client)
    response = await answer(client, method, url, raw, headers)
    event(f"{method} {response.status_code}")
    if reason is not None:
        assert response.status_code >= 400, (method, url, raw[:300], reason, response.status_code, response.text[:500])
    if method != "DELETE" and response.status_code in (200, 201):  # what was stored can be read back
        read = await client.get(response.headers["location"])
        assert read.status_code == 200, (method, url, raw[:300], read.status_code, read.text[:500])


# ---------------------------------------------------------------- 2. transaction and batch Bundles
