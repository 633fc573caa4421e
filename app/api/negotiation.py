"""Format negotiation (hl7.org/fhir/R4/http.html#mime-type): JSON only, for now.

``_format`` wins over ``Accept``; XML or any other type is a 406. Request
bodies must be ``application/fhir+json`` or ``application/json`` (415 otherwise).
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.datastructures import Headers, QueryParams

from app.errors import NotAcceptable, UnsupportedMediaType
from app.fhirjson import FHIR_JSON

JSON_TYPES = {FHIR_JSON, "application/json", "application/json+fhir", "json", "text/json"}
WILDCARDS = {"*/*", "application/*"}
FORMAT_ALIASES = JSON_TYPES | {"application/fhir json"}  # '+' arrives as a space when not escaped


@dataclass(frozen=True, slots=True)
class ResponseFormat:
    media_type: str
    pretty: bool

    @property
    def content_type(self) -> str:
        return f"{self.media_type}; charset=utf-8"


def _media_types(accept: str) -> list[str]:
    return [part.split(";", 1)[0].strip().lower() for part in accept.split(",") if part.strip()]


def negotiate(headers: Headers, params: QueryParams) -> ResponseFormat:
    pretty = params.get("_pretty", "false").lower() == "true"
    fmt = params.get("_format")
    if fmt is not None:
        chosen = fmt.split(";", 1)[0].strip().lower()
        if chosen not in FORMAT_ALIASES:
            raise NotAcceptable(f"_format '{fmt}' is not supported; this server speaks {FHIR_JSON}")
        return ResponseFormat("application/json" if chosen == "application/json" else FHIR_JSON, pretty)
    accept = headers.get("accept")
    if not accept:
        return ResponseFormat(FHIR_JSON, pretty)
    types = _media_types(accept)
    for media_type in types:
        if media_type in JSON_TYPES:
            return ResponseFormat("application/json" if media_type == "application/json" else FHIR_JSON, pretty)
        if media_type in WILDCARDS:
            return ResponseFormat(FHIR_JSON, pretty)
    raise NotAcceptable(f"cannot produce any of '{accept}'; this server speaks {FHIR_JSON}")


def require_json_body(headers: Headers) -> None:
    content_type = headers.get("content-type")
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    if media_type not in JSON_TYPES:
        raise UnsupportedMediaType(f"Content-Type '{content_type or ''}' is not supported; send {FHIR_JSON}")
