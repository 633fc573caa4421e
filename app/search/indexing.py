"""Index rows extracted from a resource at write time, in the write's transaction.

For now the token index holds ``identifier`` (every resource type with a
top-level ``identifier`` element), which conditional create uses; the full
SearchParameter-driven extraction builds on this module.
"""

from __future__ import annotations

from typing import Any

from app.storage.repository import TokenRow


def extract_index_rows(body: dict[str, Any]) -> list[TokenRow]:
    identifiers = body.get("identifier")
    if isinstance(identifiers, dict):
        identifiers = [identifiers]
    if not isinstance(identifiers, list):
        return []
    rows = []
    for identifier in identifiers:
        if isinstance(identifier, dict) and (identifier.get("system") or identifier.get("value")):
            rows.append(TokenRow("identifier", identifier.get("system"), identifier.get("value")))
    return rows
