"""The error hierarchy: every error class has its own stable code, and one table gives each its HTTP status."""

from __future__ import annotations

from app.api.outcomes import STATUS_TABLE, status_of
from app.errors import ErrorCode, FhirError, InvalidResource, MethodNotAllowed

# What a client sees for each error class (http.html#ops, hl7.org/fhir/R4/valueset-issue-type.html).
EXPECTED = {
    "InvalidRequest": (400, "invalid"),
    "InvalidResource": (400, "invalid"),
    "ResourceTypeMismatch": (400, "invalid"),
    "IdMismatch": (400, "invalid"),
    "Unauthorized": (401, "login"),
    "Forbidden": (403, "forbidden"),
    "NotFound": (404, "not-found"),
    "Gone": (410, "deleted"),
    "VersionConflict": (412, "conflict"),
    "MultipleMatches": (412, "multiple-matches"),
    "NoMatch": (412, "not-found"),
    "Unprocessable": (422, "processing"),
    "NotAcceptable": (406, "not-supported"),
    "UnsupportedMediaType": (415, "not-supported"),
    "PayloadTooLarge": (413, "too-long"),
    "MethodNotAllowed": (405, "not-supported"),
    "OperationNotSupported": (400, "not-supported"),
    "UriTooLong": (414, "too-long"),
    "StatementTimeout": (503, "timeout"),
}


def error_classes() -> list[type[FhirError]]:
    found: list[type[FhirError]] = []
    pending: list[type[FhirError]] = [FhirError]
    while pending:
        cls = pending.pop()
        for sub in cls.__subclasses__():
            found.append(sub)
            pending.append(sub)
    return found


def instance(cls: type[FhirError]) -> FhirError:
    if cls is InvalidResource:
        return InvalidResource([("bad", "Patient.x")])
    if cls is MethodNotAllowed:
        return MethodNotAllowed("no", ["GET"])
    return cls("message")


def test_every_error_class_is_known_with_its_status() -> None:
    classes = {cls.__name__: cls for cls in error_classes()}
    assert set(classes) == set(EXPECTED), "a new error class needs its status here and in STATUS_TABLE"
    for name, cls in classes.items():
        assert status_of(instance(cls)) == EXPECTED[name], name


def test_codes_are_unique_and_all_used() -> None:
    codes = [cls.code for cls in error_classes()]
    assert len(codes) == len(set(codes)), "two error classes share a code"
    assert set(codes) | {ErrorCode.INTERNAL} == set(ErrorCode)


def test_the_status_table_names_each_class_once() -> None:
    listed = [cls for cls, _, _ in STATUS_TABLE]
    assert len(listed) == len(set(listed))
    assert all(issubclass(cls, FhirError) for cls in listed)
