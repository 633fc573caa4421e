"""Request bodies: size-limited streaming read and JSON parsing."""

from __future__ import annotations

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
    return parsed
