"""OperationOutcome rendering and the one table from error class to HTTP status."""

from __future__ import annotations

from typing import Any

import orjson

from app.errors import (
    ErrorCode,
    FhirError,
    Forbidden,
    Gone,
    IdMismatch,
    InvalidRequest,
    MethodNotAllowed,
    MultipleMatches,
    NoMatch,
    NotAcceptable,
    NotFound,
    OperationNotSupported,
    PayloadTooLarge,
    StatementTimeout,
    Unauthorized,
    Unprocessable,
    UnsupportedMediaType,
    UriTooLong,
    VersionConflict,
)

# error class -> (HTTP status, OperationOutcome issue.code); most specific first.
STATUS_TABLE: list[tuple[type[FhirError], int, str]] = [
    (IdMismatch, 400, "invalid"),
    (InvalidRequest, 400, "invalid"),
    (Unauthorized, 401, "login"),
    (Forbidden, 403, "forbidden"),
    (NotFound, 404, "not-found"),
    (Gone, 410, "deleted"),
    (MultipleMatches, 412, "multiple-matches"),
    (NoMatch, 412, "not-found"),
    (VersionConflict, 412, "conflict"),
    (Unprocessable, 422, "processing"),
    (NotAcceptable, 406, "not-supported"),
    (UnsupportedMediaType, 415, "not-supported"),
    (PayloadTooLarge, 413, "too-long"),
    (MethodNotAllowed, 405, "not-supported"),
    (OperationNotSupported, 400, "not-supported"),
    (UriTooLong, 414, "too-long"),
    (StatementTimeout, 503, "timeout"),
]


def status_of(error: FhirError) -> tuple[int, str]:
    for cls, status, issue_code in STATUS_TABLE:
        if isinstance(error, cls):
            return status, issue_code
    return 400, "invalid"


def _issue(severity: str, code: str, text: str, error_code: str | None, expression: list[str]) -> dict[str, Any]:
    text = text or "no further detail"  # json.html: no empty strings, in answers either
    expression = [e for e in expression if e]
    issue: dict[str, Any] = {"severity": severity, "code": code, "diagnostics": text}
    if error_code:
        issue["details"] = {
            "coding": [{"system": "urn:care-plan-repository:error", "code": error_code}],
            "text": text,
        }
    if expression:
        issue["expression"] = expression
    return issue


def outcome_for_error(error: FhirError) -> tuple[int, dict[str, Any]]:
    status, issue_code = status_of(error)
    issues_source = getattr(error, "issues", None)
    if issues_source:
        issues = [
            _issue("error", "invalid" if status == 400 else issue_code, f"{path}: {msg}", error.code.value, [path])
            for msg, path in issues_source
        ]
    else:
        issues = [_issue("error", issue_code, error.message, error.code.value, error.expression)]
    return status, {"resourceType": "OperationOutcome", "issue": issues}


def informational(text: str, code: str = "informational") -> dict[str, Any]:
    return {"resourceType": "OperationOutcome", "issue": [_issue("information", code, text, None, [])]}


def error_outcome(text: str, issue_code: str, error_code: ErrorCode) -> dict[str, Any]:
    return {"resourceType": "OperationOutcome", "issue": [_issue("error", issue_code, text, error_code.value, [])]}


def dumps(resource: dict[str, Any], pretty: bool = False) -> bytes:
    return orjson.dumps(resource, option=orjson.OPT_INDENT_2 if pretty else 0)
