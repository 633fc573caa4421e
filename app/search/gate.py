"""Build a caller's read gate (``app.storage.gate``) from the compartment definitions of the registry.

For SMART's ``patient/`` scopes the Patient compartment is R4's
(compartmentdefinition-patient.html) **plus Task through ``Task.for``**
(its ``patient`` search parameter): R4 leaves Task out of the Patient
compartment, but care coordination needs a patient's app to see the tasks
about that patient. Compartment search (``Patient/1/Task``) keeps R4's
definition; only access uses the addition.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl

from sqlalchemy import ColumnElement

from app.errors import FhirError
from app.search.compiler import matching_ids
from app.search.registry import SearchRegistry
from app.search.request import RESULT_PARAMS, parse_search
from app.storage.gate import OPEN, Narrowing, ReadGate, TypeAccess

__all__ = ["ACCESS_MEMBERS", "OPEN", "ReadGate", "compartment_gate", "narrowing"]

ACCESS_MEMBERS: Mapping[str, Mapping[str, tuple[str, ...]]] = {"Patient": {"Task": ("patient",)}}
"""Members added to a compartment for access decisions (not for compartment search)."""


def compartment_gate(
    registry: SearchRegistry, compartment_type: str, compartment_id: str, access: TypeAccess | None = None
) -> ReadGate:
    """The gate of a caller confined to ``compartment_type/compartment_id`` (for the types ``access``
    reaches only there; for every type when ``access`` is None)."""
    members = dict(registry.compartments.get(compartment_type, {}))
    for member_type, codes in ACCESS_MEMBERS.get(compartment_type, {}).items():
        members[member_type] = tuple(dict.fromkeys((*members.get(member_type, ()), *codes)))
    hashes = {
        member_type: tuple(
            param.hash
            for code in codes
            if (param := registry.get(member_type, code)) is not None and param.type == "reference"
        )
        for member_type, codes in members.items()
    }
    return ReadGate((compartment_type, compartment_id), {t: h for t, h in hashes.items() if h}, access)


def narrowing(registry: SearchRegistry, resource_type: str, query: str) -> Narrowing | None:
    """The ids a granular scope's query matches (``patient/Observation.rs?category=laboratory``:
    scopes-and-launch-context.html#finer-grained-resource-constraints-using-search-parameters), as a
    condition on an id column; None when the query is not one this server can run (the scope then
    grants nothing: it must never grant more than it says)."""
    pairs = parse_qsl(query, keep_blank_values=True)
    if not pairs or any(name in RESULT_PARAMS or name.startswith("_include") for name, _ in pairs):
        return None
    try:
        request = parse_search(resource_type, pairs, registry, 1, 1, strict=True)
    except FhirError:
        return None
    ids = matching_ids(request)

    def condition(id_column: ColumnElement[Any]) -> ColumnElement[bool]:
        return id_column.in_(ids)

    return condition
