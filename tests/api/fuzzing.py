"""What the property-based tests of the API share: the settings, the checks every answer must pass,
a fresh store per example, raw JSON text built by hand (hl7.org/fhir/R4/json.html) and search criteria."""

from __future__ import annotations

import base64
import json
import re
from typing import Any
from urllib.parse import quote

import httpx
from fastapi import FastAPI
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from sqlalchemy import delete

from app.storage.tables import metadata
from tests.conftest import FHIR_JSON_HEADERS

# About 20 ms an example: the file takes some 20 s per backend when nothing fails.
FUZZ = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
INTERNALS = ("<class", "Traceback", "recursion", "object has no attribute", "NoneType", "sqlalche", "asyncpg")
PYTHON_WORDS = re.compile(r"\b[A-Z]\w*(?:Error|Exception)\b|\{'[\w-]+': ")  # ValueError, a dict's repr
BOM = b"\xef\xbb\xbf"
URNS = [f"urn:uuid:5b1f3c0e-0000-4000-8000-00000000000{n}" for n in range(1, 4)]
JSON_PATCH_HEADERS = {"Content-Type": "application/json-patch+json"}
SEED = [
    {"resourceType": "Patient", "id": "p1", "identifier": [{"system": "urn:a", "value": "x"}], "active": True},
    {"resourceType": "Task", "id": "t1", "status": "ready", "intent": "order", "for": {"reference": "Patient/p1"}},
    {"resourceType": "CarePlan", "id": "c1", "status": "active", "intent": "plan",
     "subject": {"reference": "Patient/p1"}},
    {"resourceType": "Observation", "id": "o1", "status": "final", "code": {"coding": [{"system": "http://loinc.org",
     "code": "1234-5"}]}, "subject": {"reference": "Patient/p1"}, "valueQuantity": {"value": 5.4, "code": "mg"}},
]  # fmt: skip

# ---------------------------------------------------------------- what every answer must satisfy


def check_outcome(body: Any, where: str) -> None:
    """An OperationOutcome whose diagnostics name FHIR problems, not Python ones."""
    assert isinstance(body, dict) and body.get("resourceType") == "OperationOutcome", (where, body)
    assert isinstance(body.get("issue"), list) and body["issue"], (where, body)
    for issue in body["issue"]:
        text = str(issue.get("diagnostics", ""))
        leaked = [marker for marker in INTERNALS if marker in text] + PYTHON_WORDS.findall(text)
        assert not leaked, (where, leaked, text)


async def store_state(client: httpx.AsyncClient) -> list[tuple[Any, ...]]:
    """Every stored version (system history): any create, update or delete changes it."""
    response = await client.get("/fhir/_history?_count=1000")
    assert response.status_code == 200, response.text
    entries = response.json().get("entry", [])
    return [(e.get("fullUrl"), e["response"].get("etag"), e["response"].get("lastModified")) for e in entries]


async def answer(
    client: httpx.AsyncClient, method: str, url: str, content: bytes | None, headers: dict[str, str]
) -> httpx.Response:
    """Send one request; the server may refuse it (4xx) but may never fail (5xx) nor keep what it refused."""
    before = await store_state(client)
    response = await client.request(method, url, content=content, headers=headers)
    shown = (method, url, content[:300] if content else None, headers)
    assert response.status_code < 500, (shown, response.status_code, response.text[:2000])
    if response.status_code >= 400:
        check_outcome(response.json(), f"{method} {url}")
        assert await store_state(client) == before, (shown, "stored although refused", response.status_code)
    return response


async def fresh_store(app: FastAPI, client: httpx.AsyncClient) -> None:
    """The same few resources and nothing else, so every example starts alike."""
    async with app.state.fhir.current.db.write() as conn:
        for table in reversed(metadata.sorted_tables):
            await conn.execute(delete(table))
    for resource in SEED:
        url = f"/fhir/{resource['resourceType']}/{resource['id']}"
        assert (await client.put(url, json=resource, headers=FHIR_JSON_HEADERS)).status_code == 201


# ---------------------------------------------------------------- JSON written by hand, JSON values, patches


NUMBERS = [
    "0", "-0", "1.10", "100.000", "12345678901234567.89", "1e999", "-1e999", "1E-999", "1e2", "2147483648",
    "-2147483649", "9" * 400, "0.1e-7", "NaN", "Infinity", "-Infinity", "01", "1.", ".5", "+1", "0x1F", "1_000",
]  # fmt: skip
STRINGS = [
    r'"\ud800"', r'"a\udfffb"', r'"\ud83d\ude00"', r'"\u0000"', r'"\u0007bell"', '"tab\there"', '"line\nbreak"',
    r'"\x41"', r'"\"', r'"\u12"', '"é"', r'"\u00e9"', '"   "', '""', '"2020-02-30"', '"0001-01-01T00:00:00+14:00"',
    '"9999-12-31T23:59:59.9999999-12:00"', '"2020-01-01T25:61:00Z"', '"Patient/p1"', f'"{URNS[0]}"', '"female"',
    r'"<div xmlns=\"http://www.w3.org/1999/xhtml\">x</div>"', r'"<div><script>alert(1)</script></div>"',
    '"http://other.example/fhir/Patient/1"', '"requested"', '"final"', '"urn:a"', '"x"',
]  # fmt: skip
COMMON = ["id", "meta", "text", "extension", "modifierExtension", "contained", "language", "implicitRules"]
ELEMENTS = {
    "Patient": ["identifier", "active", "name", "telecom", "gender", "birthDate", "deceasedBoolean", "address",
                "multipleBirthInteger", "contact", "link", "managingOrganization", "_gender", "_birthDate"],
    "Task": ["identifier", "status", "intent", "priority", "for", "owner", "authoredOn", "code", "focus",
             "executionPeriod", "input", "restriction", "basedOn", "_status"],
    "CarePlan": ["status", "intent", "subject", "period", "activity", "goal", "careTeam", "title", "created", "note"],
    "Observation": ["status", "code", "subject", "valueQuantity", "valueInteger", "valueString", "valueBoolean",
                    "effectiveDateTime", "issued", "component", "referenceRange", "_valueString"],
    "Bundle": ["type", "entry", "total", "link", "timestamp", "signature"],
}  # fmt: skip
ALL_NAMES = sorted({name for names in ELEMENTS.values() for name in names} | set(COMMON) | {"resourceType", "url"})


def json_text(value: str) -> str:
    return json.dumps(value)


def raw_object(pairs: list[tuple[str, str]]) -> str:
    """An object written by hand, so that a key may appear twice."""
    return "{" + ",".join(f"{key}:{value}" for key, value in pairs) + "}"


scalars = st.one_of(
    st.sampled_from(["null", "true", "false", "{}", "[]"]),
    st.sampled_from(NUMBERS),
    st.sampled_from(STRINGS),
    st.integers().map(str),
    st.text(max_size=12).map(json_text),
    st.text(max_size=12).map(lambda s: json.dumps(s, ensure_ascii=False)),
)
keys = st.one_of(st.sampled_from(ALL_NAMES).map(json_text), st.text(max_size=6).map(json_text))
any_json = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4).map(lambda items: "[" + ",".join(items) + "]"),
        st.lists(st.tuples(keys, inner), max_size=4).map(raw_object),
    ),
    max_leaves=10,
)
deep_json = st.tuples(st.sampled_from([30, 300, 3000, 20000]), st.sampled_from(["array", "object", "extension"])).map(
    lambda spec: {
        "array": "[" * spec[0] + "]" * spec[0],
        "object": '{"a":' * spec[0] + "1" + "}" * spec[0],
        "extension": '[{"url":"http://x","extension":' * spec[0] + "[]" + "}]" * spec[0],
    }[spec[1]]
)
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=8)),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner, max_size=3)),
    max_leaves=8,
)
patch_operations = st.fixed_dictionaries(
    {
        "op": st.sampled_from(["add", "remove", "replace", "move", "copy", "test", "foo"]),
        "path": st.sampled_from(["/active", "/gender", "/name/0/family", "/id", "/meta", "/resourceType", "", "/-"]),
    },
    optional={"value": json_values, "from": st.sampled_from(["/active", "/identifier", "/x", "/a~2"])},
)


@st.composite
def raw_bodies(draw: st.DrawFn, text: str) -> bytes:
    """The text's bytes, sometimes damaged: a BOM, bytes that are not UTF-8, a cut, trailing garbage, UTF-16."""
    raw = text.encode("utf-8")
    damage = draw(st.sampled_from(["none", "none", "bom", "bad-byte", "cut", "trailing", "utf-16"]))
    at = draw(st.integers(0, len(raw)))
    if damage == "bom":
        return BOM + raw
    if damage == "bad-byte":
        bad = draw(st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\x80", b"\xf4\x90\x80\x80"]))
        return raw[:at] + bad + raw[at:]
    if damage == "cut":
        return raw[:at]
    if damage == "trailing":
        return raw + draw(st.sampled_from([b"x", b",", b"}", b"{}", b"\x00"]))
    return text.encode("utf-16") if damage == "utf-16" else raw


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    if len({key for key, _ in pairs}) != len(pairs):
        raise ValueError("duplicate key")
    return dict(pairs)


def _refuse_constant(name: str) -> Any:
    raise ValueError(name)


TOO_DEEP = object()


def read_json(raw: bytes, unique_keys: bool = True) -> tuple[Any, str | None]:
    """(document, None), or (None, why the bytes are not JSON as RFC 8259 and json.html read it).

    UTF-8, no NaN or Infinity, no key twice. A document nested too deeply for this parser gives
    (TOO_DEEP, None): no verdict.
    """
    hook = _unique_keys if unique_keys else None
    try:
        text = raw.removeprefix(BOM).decode("utf-8")
        return json.loads(text, object_pairs_hook=hook, parse_constant=_refuse_constant), None
    except ValueError as exc:
        return None, f"not JSON: {exc}"
    except RecursionError:
        return TOO_DEEP, None


# ---------------------------------------------------------------- query strings


CONDITIONS = [
    "identifier=urn:a|x", "identifier=http://other.example/ids|42", "identifier=https://example.org/a|b%00c",
    "name=a%00b", "_id=p1", "_id=%D9%A1", "gender=female&active=true", "status=ready", f"patient={URNS[0]}",
    "subject:Patient.identifier=urn:a|x", "_has:Task:patient:status=ready", "_count=%C2%B2", "_sort=foo",
    "foo=bar", "identifier=%ZZ", "name=%", "_lastUpdated=gt0001-01-01T00:00:00+14:00", "",
]  # fmt: skip
SEARCH_TYPES = ["Patient", "Task", "CarePlan", "Observation"]
CODES = [
    "active", "address", "birthdate", "death-date", "email", "family", "gender", "general-practitioner", "given",
    "identifier", "link", "name", "organization", "phone", "telecom", "authored-on", "based-on", "business-status",
    "code", "focus", "intent", "modified", "owner", "part-of", "patient", "period", "priority", "requester", "status",
    "subject", "activity-code", "activity-date", "care-team", "category", "date", "goal", "performer",
    "code-value-quantity", "combo-code", "component-code", "value-quantity", "value-string", "value-concept",
    "_id", "_lastUpdated", "_tag", "_profile", "_security", "_source", "_text", "_content", "_list",
]  # fmt: skip
MODIFIERS = ["", ":missing", ":exact", ":contains", ":not", ":text", ":above", ":below", ":in", ":not-in",
             ":of-type", ":identifier", ":Patient", ":iterate", ":bogus", ":"]  # fmt: skip
RESULT_PARAMETERS = ["_count", "_page", "_sort", "_include", "_revinclude", "_summary", "_elements", "_total",
                     "_contained", "_containedType", "_format", "_pretty", "_since", "_at", "_type", "_query",
                     "_filter"]  # fmt: skip
PREFIXES = ["", "eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap", "xx"]
NUMBERS_AND_DATES = [
    "1", "1e999999999", "-0", "9" * 400, "1.10", "NaN", "0x10", "²", "١٢", "1e-999999999", "5.4", "0001-01-01",
    "9999-12-31T23:59:59+14:00", "0001-01-01T00:00:00-12:00", "2020", "2020-02", "2020-02-30", "2020-13", "0000",
    "9999-12-31T23:59:59.999999999Z", "10000-01-01", "2020-01-01T25:00", "2020-01-01T00:00:00+15:00",
]  # fmt: skip
OTHER_VALUES = [
    "sys|code", "|code", "sys|", "|", "http://loinc.org|1234-5", "urn:a|x", "a\\|b", "a\\,b", "a\\$b", "a$b",
    "a,b,,", ",", "$", "\\", "a\x00b", "x" * 3000, "5.4|http://unitsofmeasure.org|mg", "ap5||kg", "Patient/p1", "p1",
    "http://other.example/fhir/Patient/p1", "Patient/p1/_history/1", URNS[0], "Patient/", "/", "0", "-1", "1000000",
    "true", "false", "count", "data", "text", "accurate", "-birthdate", "_id,-_lastUpdated", "Task:patient",
    "Task:subject:Patient", "*", "Task:*", "Patient:link:iterate", "foo:bar", ":", "name,id", "foo.bar", "Patient,Task",
]  # fmt: skip
RAW_PIECES = ["%", "%zz", "%C3", "%FF", "%00", "%2C", "%7C", "+", "&&", "=="]  # sent as they are
codes = st.sampled_from(CODES)


@st.composite
def has_chains(draw: st.DrawFn) -> str:
    """``_has:Type:reference:parameter``, nested up to three times, or cut short."""
    links = [
        f"_has:{draw(st.sampled_from([*SEARCH_TYPES, 'Nope']))}:{draw(st.sampled_from(['patient', 'subject', 'x']))}"
        for _ in range(draw(st.integers(1, 3)))
    ]
    return draw(st.sampled_from([":".join(links) + ":" + draw(codes), "_has:", "_has:Task", "_has:Task:patient"]))


parameter_names = st.one_of(
    st.tuples(codes, st.sampled_from(MODIFIERS)).map("".join),
    st.lists(codes, min_size=2, max_size=4).map(".".join),
    st.sampled_from(["subject:Patient.name", "patient.general-practitioner.name", "a.b.c", "subject.", ".name"]),
    has_chains(),
    st.sampled_from(RESULT_PARAMETERS),
    st.text(max_size=10),
)
page_tokens = st.one_of(
    json_values.map(lambda value: base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")),
    st.binary(max_size=30).map(lambda data: base64.urlsafe_b64encode(data).decode()),
)
parameter_values = st.one_of(
    st.tuples(st.sampled_from(PREFIXES), st.sampled_from(NUMBERS_AND_DATES)).map("".join),
    st.sampled_from(OTHER_VALUES),
    page_tokens,
    st.text(max_size=12),
)


@st.composite
def query_strings(draw: st.DrawFn) -> str:
    """Parameters percent-encoded in different ways, sometimes with broken escapes left in."""
    safe = draw(st.sampled_from(["", ":.|$,/", ":.|$,/\\"]))
    parts = []
    for name, value in draw(st.lists(st.tuples(parameter_names, parameter_values), max_size=5)):
        part = f"{quote(name, safe=safe)}={quote(value, safe=safe)}"
        if draw(st.integers(0, 9)) == 9:
            part += draw(st.sampled_from(RAW_PIECES))
        parts.append(part)
    return "&".join(parts)


criteria = st.sampled_from(CONDITIONS) | query_strings()

# ---------------------------------------------------------------- 1. resource bodies
