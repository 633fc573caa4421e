"""Request bodies: size-limited streaming read and JSON parsing off the event loop when large."""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.requests import Request

from app import fhirjson
from app.errors import InvalidRequest, PayloadTooLarge

# Above this size parsing a body takes long enough (about 10 ms per 100 KB with duplicate-key
# checks) to delay every other request on the event loop; it runs in a worker thread instead.
OFFLOAD_BYTES = 64 * 1024


async def read_limited(request: Request, max_bytes: int) -> bytes:
    """Read the body, refusing it as soon as it passes ``max_bytes``.

    A declared Content-Length over the limit is refused before any byte is
    read; a chunked body is counted as it streams in, so an oversized upload
    never sits whole in memory.
    """
    declared = request.headers.get("content-length")
    if declared is not None and declared.isascii() and declared.isdigit() and int(declared) > max_bytes:
        raise PayloadTooLarge(f"request body of {declared} bytes exceeds the limit of {max_bytes} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise PayloadTooLarge(f"request body exceeds the limit of {max_bytes} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def parse_json(raw: bytes, check_strings: bool = True) -> Any:
    """Any JSON document (FHIR rules: no duplicate keys, decimals kept as written)."""
    if not raw.strip():
        raise InvalidRequest("the request body is empty; a JSON document is expected")
    if len(raw) > OFFLOAD_BYTES:
        return await asyncio.to_thread(fhirjson.loads, raw, check_strings)
    return fhirjson.loads(raw, check_strings)


async def parse_resource(raw: bytes, check_strings: bool = True) -> dict[str, Any]:
    """A JSON object with a resourceType; the FHIR JSON rules proper are checked by the validator.
    ``check_strings=False`` for a Bundle whose entries are checked one by one."""
    if not raw.strip():
        raise InvalidRequest("the request body is empty; a FHIR resource is expected")
    parsed = await parse_json(raw, check_strings)
    if not isinstance(parsed, dict):
        raise InvalidRequest("the body must be a JSON object (a FHIR resource)")
    if not isinstance(parsed.get("resourceType"), str):
        raise InvalidRequest("the body has no resourceType", ["resourceType"])
    return parsed
