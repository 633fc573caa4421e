"""Building FHIR HTTP responses: headers from a stored version, Prefer handling."""

from __future__ import annotations

from datetime import datetime
from email.utils import format_datetime

from starlette.datastructures import Headers
from starlette.responses import Response

from app import fhirjson
from app.api.negotiation import ResponseFormat
from app.api.outcomes import dumps, informational
from app.errors import InvalidRequest
from app.interactions.request_context import PreferReturn
from app.storage.repository import StoredVersion

STATUS_TEXT = {200: "200 OK", 201: "201 Created", 204: "204 No Content", 410: "410 Gone"}


def etag(version_id: int) -> str:
    return f'W/"{version_id}"'


def http_date(value: datetime) -> str:
    return format_datetime(value.replace(microsecond=0), usegmt=True)


def parse_etag(value: str | None, header: str) -> int | None:
    """``W/"3"``, ``"3"`` or ``3`` -> 3; None when the header is absent."""
    if value is None:
        return None
    raw = value.strip()
    if raw.startswith("W/"):
        raw = raw[2:]
    raw = raw.strip('"')
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 9:
        raise InvalidRequest(f"{header} '{value[:40]}' is not a version ETag like W/\"1\"", [header])
    return int(raw)


def version_headers(stored: StoredVersion) -> dict[str, str]:
    return {"ETag": etag(stored.version_id), "Last-Modified": http_date(stored.last_updated)}


def body_bytes(stored_body: bytes, fmt: ResponseFormat) -> bytes:
    return fhirjson.reformat(stored_body, fmt.pretty)


def resource_response(
    stored: StoredVersion, status: int, fmt: ResponseFormat, extra_headers: dict[str, str] | None = None
) -> Response:
    headers = version_headers(stored)
    if extra_headers:
        headers.update(extra_headers)
    assert stored.body is not None
    return Response(body_bytes(stored.body, fmt), status_code=status, headers=headers, media_type=fmt.content_type)


def prefer_return(headers: Headers) -> PreferReturn:
    """The ``return`` preference of the Prefer header (default ``representation``)."""
    for part in headers.get("prefer", "").split(";"):
        for item in part.split(","):
            key, _, value = item.strip().partition("=")
            if key.strip().lower() == "return":
                value = value.strip().strip('"')
                if value == "minimal":
                    return "minimal"
                if value == "OperationOutcome":
                    return "OperationOutcome"
    return "representation"


def write_response(
    stored: StoredVersion,
    status: int,
    fmt: ResponseFormat,
    prefer: str,
    message: str,
    location: str | None = None,
) -> Response:
    """Response to a create/update honouring ``Prefer: return=`` (http.html#ops)."""
    headers = version_headers(stored)
    if location:
        headers["Location"] = location
    if prefer == "minimal":
        return Response(status_code=status, headers=headers)
    if prefer == "OperationOutcome":
        return Response(dumps(informational(message), fmt.pretty), status, headers, media_type=fmt.content_type)
    return resource_response(stored, status, fmt, headers)
