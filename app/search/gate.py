"""Build a caller's read gate (``app.storage.gate``) from the compartment definitions of the registry."""

from __future__ import annotations

from app.search.registry import SearchRegistry
from app.storage.gate import OPEN, ReadGate

__all__ = ["OPEN", "ReadGate", "compartment_gate"]


def compartment_gate(registry: SearchRegistry, compartment_type: str, compartment_id: str) -> ReadGate:
    """The gate of a caller confined to ``compartment_type/compartment_id``."""
    members = registry.compartments.get(compartment_type, {})
    hashes = {
        member_type: tuple(
            param.hash
            for code in codes
            if (param := registry.get(member_type, code)) is not None and param.type == "reference"
        )
        for member_type, codes in members.items()
    }
    return ReadGate((compartment_type, compartment_id), {t: h for t, h in hashes.items() if h})
