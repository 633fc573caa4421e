"""Turn a validated body into the bytes that are stored and served."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from app import fhirjson
from app.interactions.context import format_instant


def stamp(body: dict[str, Any], resource_id: str, version_id: int, last_updated: datetime) -> bytes:
    """Set the server-owned ``id`` and ``meta.versionId``/``meta.lastUpdated``.

    The client's other ``meta`` content (profile, security, tag, source) is kept,
    and ``resourceType``, ``id``, ``meta`` come first for readability.
    """
    meta = dict(body.get("meta") or {})
    meta["versionId"] = str(version_id)
    meta["lastUpdated"] = format_instant(last_updated)
    out: dict[str, Any] = {"resourceType": body["resourceType"], "id": resource_id, "meta": meta}
    for key, value in body.items():
        if key not in out:
            out[key] = value
    return fhirjson.dumps(out)
