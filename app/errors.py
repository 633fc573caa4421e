"""The server's error hierarchy; only ``app/api`` turns these into HTTP responses.

::

    FhirError                      (code, message, expression)
    ├── InvalidRequest             400 invalid      malformed JSON, bad parameters
    │   ├── InvalidResource        400 invalid      fails validation or binding
    │   ├── ResourceTypeMismatch   400 invalid      body type != URL type
    │   └── IdMismatch             400 invalid      body id != URL id
    ├── Unauthorized               401 login        no bearer token, or one that is not valid
    ├── Forbidden                  403 forbidden    the token's scopes do not permit the interaction
    ├── NotFound                   404 not-found    unknown type, id or version
    ├── Gone                       410 deleted      the current version is a tombstone
    ├── VersionConflict            412 conflict     If-Match does not match
    ├── MultipleMatches            412 multiple-matches  conditional criteria too broad
    ├── NoMatch                    412 not-found    a conditional reference matches nothing
    ├── Unprocessable              422 processing   a PATCH that cannot apply, or whose result is invalid
    ├── NotAcceptable              406 not-supported
    ├── UnsupportedMediaType       415 not-supported
    ├── OperationNotSupported      400 not-supported  an $operation this server does not offer
    ├── PayloadTooLarge            413 too-long
    ├── UriTooLong                 414 too-long
    ├── MethodNotAllowed           405 not-supported  (``allow`` lists the methods the path takes)
    └── StatementTimeout           503 timeout      the database gave up (FHIR_DB_STATEMENT_TIMEOUT)

Each class carries a stable ``code`` (see ``ErrorCode``) so clients and logs can
match errors without parsing messages. Storage, search and interactions raise
these; none of them import FastAPI.
"""

from __future__ import annotations

from enum import StrEnum


class ErrorCode(StrEnum):
    """Stable error codes, also sent as ``OperationOutcome.issue.details.coding.code``."""

    INVALID_REQUEST = "FHIR-400"
    INVALID_RESOURCE = "FHIR-400-VALIDATION"
    RESOURCE_TYPE_MISMATCH = "FHIR-400-TYPE"
    ID_MISMATCH = "FHIR-400-ID"
    UNAUTHORIZED = "FHIR-401"
    FORBIDDEN = "FHIR-403"
    NOT_FOUND = "FHIR-404"
    GONE = "FHIR-410"
    VERSION_CONFLICT = "FHIR-412"
    MULTIPLE_MATCHES = "FHIR-412-MULTIPLE"
    NO_MATCH = "FHIR-412-NO-MATCH"
    UNPROCESSABLE = "FHIR-422"
    NOT_ACCEPTABLE = "FHIR-406"
    UNSUPPORTED_MEDIA_TYPE = "FHIR-415"
    PAYLOAD_TOO_LARGE = "FHIR-413"
    METHOD_NOT_ALLOWED = "FHIR-405"
    OPERATION_NOT_SUPPORTED = "FHIR-400-OPERATION"
    URI_TOO_LONG = "FHIR-414"
    STATEMENT_TIMEOUT = "FHIR-503-TIMEOUT"
    INTERNAL = "FHIR-500"


class FhirError(Exception):
    """Base of every error the server reports as an OperationOutcome."""

    code: ErrorCode = ErrorCode.INVALID_REQUEST

    def __init__(self, message: str, expression: list[str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.expression = expression or []


class InvalidRequest(FhirError):
    code = ErrorCode.INVALID_REQUEST


class InvalidResource(InvalidRequest):
    """The body is not a valid resource; ``issues`` holds one (message, path) per problem."""

    code = ErrorCode.INVALID_RESOURCE

    def __init__(self, issues: list[tuple[str, str]]) -> None:
        super().__init__("; ".join(f"{path}: {msg}" for msg, path in issues), [p for _, p in issues])
        self.issues = issues


class ResourceTypeMismatch(InvalidRequest):
    code = ErrorCode.RESOURCE_TYPE_MISMATCH


class IdMismatch(InvalidRequest):
    code = ErrorCode.ID_MISMATCH


class Unauthorized(FhirError):
    """No usable access token (RFC 6750 section 3): 401 with ``WWW-Authenticate: Bearer``; ``error`` is
    ``invalid_token`` when a token was sent but is malformed, expired, revoked or wrongly signed."""

    code = ErrorCode.UNAUTHORIZED

    def __init__(self, message: str, error: str | None = None) -> None:
        super().__init__(message)
        self.error = error


class Forbidden(FhirError):
    """A valid token whose scopes do not permit the interaction on that resource type (403)."""

    code = ErrorCode.FORBIDDEN


class NotFound(FhirError):
    code = ErrorCode.NOT_FOUND


class Gone(FhirError):
    code = ErrorCode.GONE

    def __init__(self, message: str, version_id: int | None = None) -> None:
        super().__init__(message)
        self.version_id = version_id


class VersionConflict(FhirError):
    code = ErrorCode.VERSION_CONFLICT


class MultipleMatches(FhirError):
    code = ErrorCode.MULTIPLE_MATCHES


class NoMatch(FhirError):
    """A conditional reference in a transaction matches no resource (a precondition, as HAPI answers)."""

    code = ErrorCode.NO_MATCH


class Unprocessable(FhirError):
    """Well-formed but cannot be carried out on this resource (http.html#patch: 422)."""

    code = ErrorCode.UNPROCESSABLE

    def __init__(self, message: str, expression: list[str] | None = None, issues: list[tuple[str, str]] | None = None):
        super().__init__(message, expression)
        if issues is not None:
            self.issues = issues


class NotAcceptable(FhirError):
    code = ErrorCode.NOT_ACCEPTABLE


class UnsupportedMediaType(FhirError):
    code = ErrorCode.UNSUPPORTED_MEDIA_TYPE


class PayloadTooLarge(FhirError):
    code = ErrorCode.PAYLOAD_TOO_LARGE


class MethodNotAllowed(FhirError):
    code = ErrorCode.METHOD_NOT_ALLOWED

    def __init__(self, message: str, allow: list[str] | None = None) -> None:
        super().__init__(message)
        self.allow = allow or []


class OperationNotSupported(FhirError):
    """An ``$operation`` the server does not implement (400, as HAPI answers)."""

    code = ErrorCode.OPERATION_NOT_SUPPORTED


class UriTooLong(FhirError):
    code = ErrorCode.URI_TOO_LONG


class StatementTimeout(FhirError):
    """A statement ran past ``FHIR_DB_STATEMENT_TIMEOUT`` and the database cancelled it."""

    code = ErrorCode.STATEMENT_TIMEOUT
