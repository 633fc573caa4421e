"""Request bodies: size-limited streaming read and JSON parsing."""

from __future__ import annotations

import re
from typing import Any

import orjson
from starlette.requests import Request

from app.errors import InvalidRequest, PayloadTooLarge


async def read_limited(request: Request, max_bytes: int) -> bytes:
    """Read the body, refusing it as soon as it passes ``max_bytes``.

    A declared Content-Length over the limit is refused before any byte is
    read; a chunked body is counted as it streams in, so an oversized upload
    never sits whole in memory.
    """
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise PayloadTooLarge(f"request body of {declared} bytes exceeds the limit of {max_bytes} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise PayloadTooLarge(f"request body exceeds the limit of {max_bytes} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


# A JSON escape of a control character other than tab, LF and CR (datatypes.html#string).
_CONTROL_ESCAPE = re.compile(rb"\\u00(?:0[0-8bcefBCEF]|1[0-9a-fA-F])")
_CONTROL_CHARS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f]")


def _find_control_character(node: Any, path: str) -> str | None:
    if isinstance(node, str):
        return path if _CONTROL_CHARS.search(node) else None
    if isinstance(node, dict):
        for key, value in node.items():
            found = _find_control_character(key, path) or _find_control_character(value, f"{path}.{key}")
            if found:
                return found
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found = _find_control_character(value, f"{path}[{index}]")
            if found:
                return found
    return None


def parse_resource(raw: bytes) -> dict[str, Any]:
    if not raw.strip():
        raise InvalidRequest("the request body is empty; a FHIR resource is expected")
    try:
        parsed = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"the body is not valid JSON: {exc}") from None
    if not isinstance(parsed, dict):
        raise InvalidRequest("the body must be a JSON object (a FHIR resource)")
    if not isinstance(parsed.get("resourceType"), str):
        raise InvalidRequest("the body has no resourceType", ["resourceType"])
    if _CONTROL_ESCAPE.search(raw):  # cheap test first; walk only when it may be there
        where = _find_control_character(parsed, parsed["resourceType"])
        if where:
            raise InvalidRequest(f"{where}: strings must not contain control characters", [where])
    return parsed
