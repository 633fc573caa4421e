"""Bundle entries of a transaction or batch -> checked ``Entry`` objects (http.html#transaction): pure.

Every structural problem is a 400 naming the entry (``Bundle.entry[3].request.url``),
found before anything is executed.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from app import fhirjson
from app.errors import FhirError, InvalidRequest, InvalidResource, PayloadTooLarge
from app.interactions.context import is_valid_id
from app.interactions.instants import parse_http_or_fhir_instant
from app.interactions.patch import FHIRPATH_PATCH, JSON_PATCH
from app.validation.json_rules import JsonRules

METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH")


@dataclass(slots=True)
class Entry:
    """One request of the Bundle, with its URL taken apart."""

    index: int
    method: str
    url: str
    resource_type: str
    resource_id: str | None = None
    version_id: str | None = None
    query: str | None = None
    resource: dict[str, Any] | None = None
    full_url: str | None = None
    if_none_exist: str | None = None
    if_match: int | None = None
    if_none_match: int | None = None
    if_modified_since: datetime | None = None
    patch: tuple[str, Any] | None = None

    @property
    def where(self) -> str:
        return f"Bundle.entry[{self.index}]"


def at_entry(index: int, error: FhirError) -> FhirError:
    """The same error, its message and expressions naming the entry (so the client can find it)."""
    where = f"Bundle.entry[{index}]"
    error.message = f"{where}: {error.message}"
    error.args = (error.message,)
    if isinstance(error, InvalidResource) or getattr(error, "issues", None):
        error.issues = [(message, f"{where}.resource.{path}") for message, path in error.issues]  # type: ignore[attr-defined]
    error.expression = [f"{where}.resource.{e}" if not e.startswith("Bundle") else e for e in error.expression] or [
        where
    ]
    return error


def _etag(value: Any, where: str) -> int | None:
    if value is None:
        return None
    text = str(value).strip()
    if text.startswith("W/"):
        text = text[2:]
    text = text.strip('"')
    if not (text.isascii() and text.isdigit()) or len(text) > 9:
        raise InvalidRequest(f"{where}: '{str(value)[:40]}' is not a version ETag like W/\"3\"", [where])
    return int(text)


def _relative(url: str, base_url: str) -> str:
    """Request URLs may be absolute on this server's base; anything else is relative to it.

    Only the part before the query decides: a conditional URL's search values
    are often absolute URLs themselves (``Task?identifier=https://example.org/ids|42``).
    """
    if url.startswith(base_url + "/"):
        return url[len(base_url) + 1 :]
    path = url.partition("?")[0]
    if "://" in path:
        parts = urlsplit(path)
        raise InvalidRequest(f"request url '{url[:200]}' is not on this server ({parts.scheme}://{parts.netloc})")
    return url.lstrip("/")


def _patch_document(resource: Any, where: str) -> tuple[str, Any]:
    """A PATCH entry carries a Binary (JSON Patch, base64) or a Parameters (FHIRPath Patch)."""
    if not isinstance(resource, dict):
        raise InvalidRequest(f"{where}: a PATCH entry needs a Binary or Parameters resource", [f"{where}.resource"])
    if resource.get("resourceType") == "Parameters":
        return FHIRPATH_PATCH, resource
    if resource.get("resourceType") == "Binary" and resource.get("contentType") == JSON_PATCH:
        data = resource.get("data")
        if not isinstance(data, str):
            raise InvalidRequest(f"{where}: Binary.data must hold the base64 JSON Patch", [f"{where}.resource.data"])
        try:
            decoded = base64.b64decode(data, validate=True)
        except (ValueError, binascii.Error):
            raise InvalidRequest(f"{where}: Binary.data is not base64", [f"{where}.resource.data"]) from None
        try:
            return JSON_PATCH, fhirjson.loads(decoded)
        except InvalidRequest as exc:
            raise InvalidRequest(f"{where}: Binary.data: {exc.message}", [f"{where}.resource.data"]) from None
    raise InvalidRequest(
        f"{where}: a PATCH entry carries a Binary with contentType {JSON_PATCH} or a Parameters resource",
        [f"{where}.resource"],
    )


def parse_entry(
    index: int, raw: Any, base_url: str, resource_types: frozenset[str], rules: JsonRules, check_strings: bool = True
) -> Entry:
    where = f"Bundle.entry[{index}]"
    if not isinstance(raw, dict):
        raise InvalidRequest(f"{where} is not an object", [where])
    if check_strings:
        fhirjson.refuse_bad_strings(raw, where)
    shape = rules.check_element(raw, "Bundle.entry", where, skip_resources=True)  # resources: checked on their own
    if shape.issues:
        raise InvalidResource(shape.issues)
    request = raw.get("request")
    if not isinstance(request, dict):
        raise InvalidRequest(f"{where} has no request", [f"{where}.request"])
    method = request.get("method")
    if method not in METHODS:
        raise InvalidRequest(
            f"{where}: request.method '{method}' is not one of {', '.join(METHODS)}", [f"{where}.request.method"]
        )
    url = request.get("url")
    if not isinstance(url, str) or not url.strip():
        raise InvalidRequest(f"{where} has no request.url", [f"{where}.request.url"])
    try:
        relative = _relative(url.strip(), base_url)
    except InvalidRequest as exc:
        raise InvalidRequest(f"{where}: {exc.message}", [f"{where}.request.url"]) from None
    path, _, query = relative.partition("?")
    segments = [s for s in path.split("/") if s]
    if not segments or segments[0] not in resource_types:
        raise InvalidRequest(
            f"{where}: request.url '{url}' does not name a resource type this server serves", [f"{where}.request.url"]
        )
    entry = Entry(index, method, url, segments[0], query=query or None)
    if len(segments) >= 2:
        entry.resource_id = segments[1]
        if not is_valid_id(segments[1]):
            raise InvalidRequest(f"{where}: '{segments[1]}' in request.url is not a valid id", [f"{where}.request.url"])
    if len(segments) == 4 and segments[2] == "_history" and method in ("GET", "HEAD"):
        entry.version_id = segments[3]
    elif len(segments) > 2 or (len(segments) == 2 and query and method != "GET"):
        raise InvalidRequest(f"{where}: request.url '{url}' is not a valid {method} url", [f"{where}.request.url"])
    resource = raw.get("resource")
    if method in ("POST", "PUT"):
        if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
            raise InvalidRequest(f"{where}: a {method} entry needs a resource", [f"{where}.resource"])
        if resource["resourceType"] != entry.resource_type:
            raise InvalidRequest(
                f"{where}: resource type {resource['resourceType']} does not match request.url '{url}'",
                [f"{where}.resource.resourceType"],
            )
        entry.resource = resource
    if method == "POST" and (entry.resource_id or entry.query):
        raise InvalidRequest(
            f"{where}: a POST url is just the type (use ifNoneExist for a condition)", [f"{where}.request.url"]
        )
    if method in ("PUT", "DELETE", "PATCH") and not entry.resource_id and not entry.query:
        raise InvalidRequest(f"{where}: a {method} url needs an id or search criteria", [f"{where}.request.url"])
    if method == "PATCH":
        entry.patch = _patch_document(resource, where)
    full_url = raw.get("fullUrl")
    if full_url is not None and not isinstance(full_url, str):
        raise InvalidRequest(f"{where}.fullUrl must be a string", [f"{where}.fullUrl"])
    entry.full_url = full_url
    entry.if_none_exist = request.get("ifNoneExist")
    entry.if_match = _etag(request.get("ifMatch"), f"{where}.request.ifMatch")
    entry.if_none_match = _etag(request.get("ifNoneMatch"), f"{where}.request.ifNoneMatch")
    since = request.get("ifModifiedSince")
    if since is not None:
        entry.if_modified_since = parse_http_or_fhir_instant(since, f"{where}.request.ifModifiedSince")
    return entry


def parse_bundle(
    bundle: dict[str, Any],
    kinds: tuple[str, ...],
    max_entries: int,
    base_url: str,
    resource_types: frozenset[str],
    rules: JsonRules,
    check_strings: bool = True,
) -> tuple[str, list[Entry | FhirError]]:
    """(bundle type, entries); for a batch an unparsable entry is kept as its error, for a transaction it is raised."""
    if bundle.get("resourceType") != "Bundle":
        raise InvalidRequest("POST to the base takes a Bundle of type transaction or batch", ["resourceType"])
    kind = bundle.get("type")
    if kind not in kinds:
        shown = str(kind)[:40]
        raise InvalidRequest(f"Bundle.type '{shown}' cannot be processed; send transaction or batch", ["Bundle.type"])
    raw_entries = bundle.get("entry", [])
    if not isinstance(raw_entries, list) or (not raw_entries and "entry" in bundle):
        raise InvalidRequest("Bundle.entry must be a non-empty array (or absent)", ["Bundle.entry"])
    if len(raw_entries) > max_entries:
        raise PayloadTooLarge(f"the Bundle has {len(raw_entries)} entries; at most {max_entries} are accepted")
    if check_strings:
        fhirjson.refuse_bad_strings({k: v for k, v in bundle.items() if k != "entry"}, "Bundle")
    shell = rules.check_element(
        {k: v for k, v in bundle.items() if k not in ("resourceType", "entry")}, "Bundle", "Bundle"
    )
    if shell.issues:
        raise InvalidResource(shell.issues)
    entries: list[Entry | FhirError] = []
    for index, raw in enumerate(raw_entries):
        try:
            entries.append(parse_entry(index, raw, base_url, resource_types, rules, check_strings))
        except FhirError as exc:
            if kind == "transaction":
                raise
            entries.append(exc)
    return kind, entries
