"""Transaction and batch entries taken apart (``app/interactions/bundle_entries.py``, http.html#transaction).

``parse_entry`` turns one ``Bundle.entry`` into an ``Entry``: method, type, id,
version, query, resource, conditions and ETags, the PATCH document decoded.
Every structural problem is a 400 whose message and expression name the
entry, found before anything runs. ``parse_bundle`` checks the Bundle around
the entries (a batch keeps a bad entry as its error, a transaction raises it)
and ``at_entry`` re-addresses an error raised later to the entry it came from.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from app.errors import FhirError, InvalidRequest, InvalidResource, NotFound, PayloadTooLarge, Unprocessable
from app.interactions.bundle_entries import Entry, at_entry, parse_bundle, parse_entry
from app.interactions.patch import FHIRPATH_PATCH, JSON_PATCH
from app.validation.json_rules import JsonLimits, JsonRules, load_element_table
from app.validation.narrative import narrative_problems

RULES = JsonRules(load_element_table(), JsonLimits(), narrative_problems)
BASE_URL = "https://fhir.example.org/r4"
TYPES = frozenset({"Patient", "Task", "Observation"})
PATIENT = {"resourceType": "Patient", "name": [{"family": "Rivera"}]}
JSON_PATCH_OPS = [{"op": "replace", "path": "/active", "value": False}]
FHIRPATH_PARAMETERS = {
    "resourceType": "Parameters",
    "parameter": [
        {
            "name": "operation",
            "part": [{"name": "type", "valueCode": "delete"}, {"name": "path", "valueString": "Patient.active"}],
        }
    ],
}


def entry(method: str, url: str, resource: Any = None, full_url: Any = None, **request: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {"request": {"method": method, "url": url, **request}}
    if resource is not None:
        raw["resource"] = resource
    if full_url is not None:
        raw["fullUrl"] = full_url
    return raw


def binary(data: Any, content_type: str = JSON_PATCH) -> dict[str, Any]:
    resource = {"resourceType": "Binary", "contentType": content_type}
    if data is not None:
        resource["data"] = data
    return resource


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def parse(raw: Any, index: int = 0, check_strings: bool = True) -> Entry:
    return parse_entry(index, raw, BASE_URL, TYPES, RULES, check_strings)


def bundle(kind: str, *entries: Any) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": kind, "entry": list(entries)}


def parse_all(body: dict[str, Any], max_entries: int = 10, kinds: tuple[str, ...] = ("transaction", "batch")) -> Any:
    return parse_bundle(body, kinds, max_entries, BASE_URL, TYPES, RULES)


# --- each method -----------------------------------------------------------------------------------


def test_read() -> None:
    parsed = parse(entry("GET", "Patient/p1"), index=4)
    assert parsed == Entry(4, "GET", "Patient/p1", "Patient", resource_id="p1")
    assert parsed.where == "Bundle.entry[4]"


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_vread(method: str) -> None:
    parsed = parse(entry(method, "Patient/p1/_history/2"))
    assert (parsed.method, parsed.resource_type, parsed.resource_id, parsed.version_id) == (
        method,
        "Patient",
        "p1",
        "2",
    )
    assert parsed.query is None


def test_search() -> None:
    parsed = parse(entry("GET", "Task?status=requested&_count=2"))
    assert (parsed.resource_type, parsed.resource_id, parsed.query) == ("Task", None, "status=requested&_count=2")


def test_a_read_may_carry_parameters() -> None:
    parsed = parse(entry("GET", "Patient/p1?_elements=name"))
    assert (parsed.resource_id, parsed.query) == ("p1", "_elements=name")


def test_search_values_may_be_absolute_urls() -> None:
    parsed = parse(entry("GET", "Task?identifier=https://example.org/ids|42"))
    assert parsed.query == "identifier=https://example.org/ids|42"


def test_create_with_if_none_exist() -> None:
    raw = entry("POST", "Patient", PATIENT, full_url="urn:uuid:6f2b0c64-1f0a-4c39-9d1e-5b0c3d9d6a11")
    raw["request"]["ifNoneExist"] = "identifier=urn:mrn|123"
    parsed = parse(raw)
    assert (parsed.method, parsed.resource_type, parsed.resource_id, parsed.query) == ("POST", "Patient", None, None)
    assert parsed.resource is raw["resource"]
    assert parsed.full_url == "urn:uuid:6f2b0c64-1f0a-4c39-9d1e-5b0c3d9d6a11"
    assert parsed.if_none_exist == "identifier=urn:mrn|123"


def test_update() -> None:
    parsed = parse(entry("PUT", "Patient/p1", {**PATIENT, "id": "p1"}, ifMatch='W/"3"'))
    assert (parsed.method, parsed.resource_type, parsed.resource_id, parsed.query) == ("PUT", "Patient", "p1", None)
    assert parsed.resource == {**PATIENT, "id": "p1"}
    assert parsed.if_match == 3
    assert parsed.patch is None


def test_conditional_update() -> None:
    parsed = parse(entry("PUT", "Patient?identifier=urn:mrn|123", PATIENT))
    assert (parsed.resource_id, parsed.query) == (None, "identifier=urn:mrn|123")
    assert parsed.resource == PATIENT


def test_json_patch() -> None:
    raw = entry("PATCH", "Patient/p1", binary(b64(orjson.dumps(JSON_PATCH_OPS))), ifMatch='W/"7"')
    parsed = parse(raw)
    assert (parsed.method, parsed.resource_id, parsed.if_match) == ("PATCH", "p1", 7)
    assert parsed.patch == (JSON_PATCH, JSON_PATCH_OPS)
    assert parsed.resource is None  # the Binary is the patch, not a resource to store


def test_fhirpath_patch() -> None:
    parsed = parse(entry("PATCH", "Patient/p1", FHIRPATH_PARAMETERS))
    assert parsed.patch == (FHIRPATH_PATCH, FHIRPATH_PARAMETERS)
    assert parsed.resource is None


def test_conditional_patch() -> None:
    parsed = parse(entry("PATCH", "Patient?identifier=urn:mrn|123", FHIRPATH_PARAMETERS))
    assert (parsed.resource_id, parsed.query) == (None, "identifier=urn:mrn|123")
    assert parsed.patch is not None and parsed.patch[0] == FHIRPATH_PATCH


def test_delete() -> None:
    parsed = parse(entry("DELETE", "Task/t1"))
    assert parsed == Entry(0, "DELETE", "Task/t1", "Task", resource_id="t1")


def test_conditional_delete() -> None:
    parsed = parse(entry("DELETE", "Task?status=cancelled"))
    assert (parsed.method, parsed.resource_id, parsed.query) == ("DELETE", None, "status=cancelled")


# --- conditions and URLs ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("etag", "version"),
    [('W/"3"', 3), ('"3"', 3), ("3", 3), (' W/"12" ', 12), ('W/"0"', 0), ('W/"999999999"', 999_999_999)],
)
def test_version_etags(etag: str, version: int) -> None:
    parsed = parse(entry("PUT", "Patient/p1", PATIENT, ifMatch=etag, ifNoneMatch=etag))
    assert (parsed.if_match, parsed.if_none_match) == (version, version)


@pytest.mark.parametrize(
    ("since", "expected"),
    [
        ("2020-01-01T00:00:00Z", datetime(2020, 1, 1, tzinfo=UTC)),
        ("2020-01-01T02:00:00+02:00", datetime(2020, 1, 1, tzinfo=UTC)),
        ("Wed, 21 Oct 2015 07:28:00 GMT", datetime(2015, 10, 21, 7, 28, tzinfo=UTC)),
    ],
)
def test_if_modified_since_is_an_instant_or_an_http_date(since: str, expected: datetime) -> None:
    parsed = parse(entry("GET", "Patient/p1", ifModifiedSince=since, ifNoneMatch='W/"2"'))
    assert parsed.if_modified_since == expected
    assert parsed.if_modified_since is not None and parsed.if_modified_since.utcoffset() is not None
    assert parsed.if_none_match == 2


@pytest.mark.parametrize(
    ("url", "resource_id", "query"),
    [
        (f"{BASE_URL}/Patient/p1", "p1", None),
        (f"{BASE_URL}/Patient?identifier=urn:mrn|123", None, "identifier=urn:mrn|123"),
        (f"{BASE_URL}/Patient?identifier={BASE_URL}/ids|1", None, f"identifier={BASE_URL}/ids|1"),
        ("/Patient/p1", "p1", None),
        ("  Patient/p1  ", "p1", None),
    ],
)
def test_urls_are_relative_to_the_base(url: str, resource_id: str | None, query: str | None) -> None:
    parsed = parse(entry("GET", url))
    assert (parsed.resource_type, parsed.resource_id, parsed.query) == ("Patient", resource_id, query)
    assert parsed.url == url  # kept as the client wrote it (for the response)


# --- errors ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "message", "at"),
    [
        ("not an entry", "Bundle.entry[3] is not an object", ""),
        ({"resource": PATIENT}, "Bundle.entry[3] has no request", ".request"),
        (
            entry("FETCH", "Patient"),
            "request.method 'FETCH' is not one of GET, HEAD, POST, PUT, DELETE, PATCH",
            ".request.method",
        ),
        ({"request": {"url": "Patient"}}, "request.method 'None' is not one of", ".request.method"),
        ({"request": {"method": "GET"}}, "Bundle.entry[3] has no request.url", ".request.url"),
        (entry("GET", "   "), "Bundle.entry[3] has no request.url", ".request.url"),
        (
            entry("GET", "https://other.example.org/fhir/Patient/p1"),
            "request url 'https://other.example.org/fhir/Patient/p1' is not on this server (https://other.example.org)",
            ".request.url",
        ),
        (entry("GET", f"{BASE_URL}x/Patient/p1"), "is not on this server (https://fhir.example.org)", ".request.url"),
        (
            entry("GET", "Group/g1"),
            "request.url 'Group/g1' does not name a resource type this server serves",
            ".request.url",
        ),
        (entry("GET", "?name=x"), "does not name a resource type this server serves", ".request.url"),
        (entry("GET", "Patient/bad_id"), "'bad_id' in request.url is not a valid id", ".request.url"),
        (entry("GET", "Patient/" + "a" * 65), "in request.url is not a valid id", ".request.url"),
        (
            entry("GET", "Patient/p1/_history"),
            "request.url 'Patient/p1/_history' is not a valid GET url",
            ".request.url",
        ),
        (entry("GET", "Patient/p1/x/2"), "request.url 'Patient/p1/x/2' is not a valid GET url", ".request.url"),
        (entry("DELETE", "Patient/p1/_history/2"), "is not a valid DELETE url", ".request.url"),
        (
            entry("PUT", "Patient/p1?active=true", PATIENT),
            "request.url 'Patient/p1?active=true' is not a valid PUT url",
            ".request.url",
        ),
        (entry("POST", "Patient"), "a POST entry needs a resource", ".resource"),
        (entry("POST", "Patient", {"name": []}), "a POST entry needs a resource", ".resource"),
        (
            entry("POST", "Patient/p1", PATIENT),
            "a POST url is just the type (use ifNoneExist for a condition)",
            ".request.url",
        ),
        (entry("POST", "Patient?identifier=x", PATIENT), "a POST url is just the type", ".request.url"),
        (
            entry("PUT", "Task/t1", PATIENT),
            "resource type Patient does not match request.url 'Task/t1'",
            ".resource.resourceType",
        ),
        (entry("PUT", "Patient", PATIENT), "a PUT url needs an id or search criteria", ".request.url"),
        (entry("DELETE", "Patient"), "a DELETE url needs an id or search criteria", ".request.url"),
        (entry("PATCH", "Patient", FHIRPATH_PARAMETERS), "a PATCH url needs an id or search criteria", ".request.url"),
        (
            entry("PUT", "Patient/p1", PATIENT, ifMatch='W/"x"'),
            '\'W/"x"\' is not a version ETag like W/"3"',
            ".request.ifMatch",
        ),
        (entry("PUT", "Patient/p1", PATIENT, ifMatch='W/""'), "is not a version ETag", ".request.ifMatch"),
        (entry("PUT", "Patient/p1", PATIENT, ifMatch='"1234567890"'), "is not a version ETag", ".request.ifMatch"),
        (entry("GET", "Patient/p1", ifNoneMatch='W/"-1"'), "is not a version ETag", ".request.ifNoneMatch"),
        (entry("GET", "Patient/p1", ifNoneMatch="*"), "is not a version ETag", ".request.ifNoneMatch"),
        (
            entry("GET", "Patient/p1", ifModifiedSince="yesterday"),
            "is not an instant or an HTTP date",
            ".request.ifModifiedSince",
        ),
        (
            entry("GET", "Patient/p1", ifModifiedSince="2020-01-01T00:00:00"),
            "must include a time zone",
            ".request.ifModifiedSince",
        ),
    ],
)
def test_structural_problems_are_400_naming_the_entry(raw: Any, message: str, at: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        parse(raw, index=3)
    assert type(refused.value) is InvalidRequest
    assert refused.value.message.startswith("Bundle.entry[3]")
    assert message in refused.value.message
    assert refused.value.expression == [f"Bundle.entry[3]{at}"]


@pytest.mark.parametrize(
    ("resource", "message", "at"),
    [
        (None, "a PATCH entry needs a Binary or Parameters resource", ".resource"),
        (
            PATIENT,
            f"a PATCH entry carries a Binary with contentType {JSON_PATCH} or a Parameters resource",
            ".resource",
        ),
        (binary(b64(b"[]"), content_type="application/json"), "carries a Binary with contentType", ".resource"),
        (binary(None), "Binary.data must hold the base64 JSON Patch", ".resource.data"),
        (binary("%%% not base64 %%%"), "Binary.data is not base64", ".resource.data"),
        (binary(b64(b'[{"op": ')), "Binary.data: the body is not valid JSON", ".resource.data"),
    ],
    ids=["no-resource", "a-patient", "binary-of-another-type", "binary-without-data", "not-base64", "not-json"],
)
def test_a_patch_body_that_is_neither_json_patch_nor_parameters_is_400(resource: Any, message: str, at: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        parse(entry("PATCH", "Patient/p1", resource), index=5)
    assert refused.value.message.startswith("Bundle.entry[5]: ")
    assert message in refused.value.message
    assert refused.value.expression == [f"Bundle.entry[5]{at}"]


def test_element_shapes_are_checked_with_the_entry_path() -> None:
    with pytest.raises(InvalidResource) as refused:
        parse(entry("GET", "Patient/p1", full_url=3), index=2)
    assert refused.value.issues == [("must be a JSON string (uri)", "Bundle.entry[2].fullUrl")]
    with pytest.raises(InvalidResource) as refused:
        parse(entry("PUT", "Patient/p1", PATIENT, ifMatch=3), index=2)
    assert refused.value.expression == ["Bundle.entry[2].request.ifMatch"]


def test_control_characters_are_refused_unless_the_caller_already_looked() -> None:
    raw = entry("GET", "Patient/p1", full_url="urn:uuid:a\x01b")
    with pytest.raises(InvalidRequest) as refused:
        parse(raw, index=1)
    assert refused.value.expression == ["Bundle.entry[1].fullUrl"]
    assert "control characters" in refused.value.message
    assert parse(raw, index=1, check_strings=False).full_url == "urn:uuid:a\x01b"


# --- at_entry --------------------------------------------------------------------------------------


def test_at_entry_names_the_entry_in_message_and_expression() -> None:
    error = InvalidRequest("family must be a string", ["Patient.name[0].family"])
    same = at_entry(2, error)
    assert same is error
    assert error.message == "Bundle.entry[2]: family must be a string"
    assert str(error) == error.message
    assert error.expression == ["Bundle.entry[2].resource.Patient.name[0].family"]


@pytest.mark.parametrize(
    ("error", "expression"),
    [
        (NotFound("Patient/p9 is not known"), ["Bundle.entry[7]"]),
        (InvalidRequest("bad url", ["Bundle.entry[7].request.url"]), ["Bundle.entry[7].request.url"]),
        (
            InvalidRequest("two", ["Patient.id", "Bundle.entry[1].fullUrl"]),
            ["Bundle.entry[7].resource.Patient.id", "Bundle.entry[1].fullUrl"],
        ),
    ],
    ids=["no-expression", "already-a-bundle-path", "mixed"],
)
def test_at_entry_expressions(error: FhirError, expression: list[str]) -> None:
    assert at_entry(7, error).expression == expression
    assert error.message.startswith("Bundle.entry[7]: ")


@pytest.mark.parametrize(
    "error",
    [
        InvalidResource([("must be a JSON string", "Patient.gender"), ("unknown element", "Patient.colour")]),
        Unprocessable("the result is not valid", issues=[("must be a JSON string", "Patient.gender")]),
    ],
    ids=["invalid-resource", "unprocessable-with-issues"],
)
def test_at_entry_moves_validation_issues_under_the_entry_resource(error: FhirError) -> None:
    before = list(error.issues)  # type: ignore[attr-defined]
    at_entry(0, error)
    assert error.issues == [(m, f"Bundle.entry[0].resource.{p}") for m, p in before]  # type: ignore[attr-defined]
    assert error.message.startswith("Bundle.entry[0]: ")


# --- parse_bundle ----------------------------------------------------------------------------------


def test_a_transaction_is_parsed_entry_by_entry() -> None:
    kind, entries = parse_all(
        bundle("transaction", entry("POST", "Patient", PATIENT), entry("GET", "Patient?name=Rivera"))
    )
    assert kind == "transaction"
    assert [(e.index, e.method, e.resource_type) for e in entries] == [(0, "POST", "Patient"), (1, "GET", "Patient")]


def test_a_batch_keeps_a_bad_entry_as_its_error() -> None:
    kind, entries = parse_all(bundle("batch", entry("GET", "Patient/p1"), "oops", entry("DELETE", "Patient")))
    assert kind == "batch"
    assert isinstance(entries[0], Entry) and entries[0].resource_id == "p1"
    assert isinstance(entries[1], InvalidRequest) and entries[1].message == "Bundle.entry[1] is not an object"
    assert isinstance(entries[2], InvalidRequest)
    assert entries[2].message == "Bundle.entry[2]: a DELETE url needs an id or search criteria"


def test_a_transaction_raises_its_first_bad_entry() -> None:
    with pytest.raises(InvalidRequest) as refused:
        parse_all(bundle("transaction", entry("GET", "Patient/p1"), entry("PUT", "Patient", PATIENT), "oops"))
    assert refused.value.message == "Bundle.entry[1]: a PUT url needs an id or search criteria"
    assert refused.value.expression == ["Bundle.entry[1].request.url"]


def test_a_bundle_without_entries_is_accepted() -> None:
    assert parse_all({"resourceType": "Bundle", "type": "batch"}) == ("batch", [])


@pytest.mark.parametrize(
    ("body", "message", "expression"),
    [
        ({"resourceType": "Patient"}, "POST to the base takes a Bundle of type transaction or batch", ["resourceType"]),
        (
            {"resourceType": "Bundle", "type": "collection", "entry": []},
            "Bundle.type 'collection' cannot be processed; send transaction or batch",
            ["Bundle.type"],
        ),
        ({"resourceType": "Bundle"}, "Bundle.type 'None' cannot be processed", ["Bundle.type"]),
        (
            {"resourceType": "Bundle", "type": "batch", "entry": []},
            "Bundle.entry must be a non-empty array (or absent)",
            ["Bundle.entry"],
        ),
        (
            {"resourceType": "Bundle", "type": "batch", "entry": {}},
            "Bundle.entry must be a non-empty array (or absent)",
            ["Bundle.entry"],
        ),
        (
            {"resourceType": "Bundle", "type": "batch", "id": "b\x01"},
            "Bundle.id: strings must not hold control characters",
            ["Bundle.id"],
        ),
        (
            {"resourceType": "Bundle", "type": "batch", "total": "x"},
            "Bundle.total: must be a JSON integer",
            ["Bundle.total"],
        ),
    ],
    ids=["not-a-bundle", "collection", "no-type", "empty-entry", "entry-not-array", "control-character", "bad-shell"],
)
def test_what_is_not_a_transaction_or_batch_is_400(body: dict[str, Any], message: str, expression: list[str]) -> None:
    with pytest.raises(InvalidRequest) as refused:
        parse_all(body)
    assert message in refused.value.message
    assert refused.value.expression == expression


def test_only_the_kinds_asked_for_are_processed() -> None:
    with pytest.raises(InvalidRequest) as refused:
        parse_all(bundle("transaction", entry("GET", "Patient/p1")), kinds=("batch",))
    assert refused.value.message == "Bundle.type 'transaction' cannot be processed; send transaction or batch"


def test_too_many_entries_is_413() -> None:
    entries = [entry("GET", f"Patient/p{n}") for n in range(3)]
    assert len(parse_all(bundle("batch", *entries), max_entries=3)[1]) == 3
    with pytest.raises(PayloadTooLarge) as refused:
        parse_all(bundle("batch", *entries), max_entries=2)
    assert refused.value.message == "the Bundle has 3 entries; at most 2 are accepted"
