"""The read gate: what a caller may read, as a SQL condition on every statement that selects resources.

``app.search.gate`` builds a caller's gate from the search registry; this module is what every
selecting statement, in storage and in search, applies.

Every resource that leaves the server (read, vread, search matches and
includes, chain and ``_has`` targets, compartment and system search, history,
transaction entries, and the matching of conditional interactions and
references) is selected by a statement that ``ReadGate`` restricts. The
restriction is part of the SQL, not a filter on the results, so pages stay
full and totals stay true.

A caller confined to a compartment (SMART's patient-level scopes,
hl7.org/fhir/smart-app-launch/scopes-and-launch-context.html) may read the
compartment's own resource (``Patient/123``) and the resources that refer to
it through one of their compartment parameters (compartmentdefinition.html),
judged by the reference index, which holds rows for live resources only.
An unrestricted caller's gate adds nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import ColumnElement, and_, exists, false, or_, select, true

from app.storage.index_tables import INDEX_TABLES


@dataclass(frozen=True, slots=True)
class ReadGate:
    """``compartment`` (type, id) confines the caller; ``members``: per member type, the hashes of the
    parameters that link its resources to the compartment."""

    compartment: tuple[str, str] | None = None
    members: Mapping[str, tuple[int, ...]] = field(default_factory=dict)

    @property
    def open(self) -> bool:
        return self.compartment is None

    def ids(self, resource_type: str, id_column: ColumnElement[Any]) -> ColumnElement[bool]:
        """Which ids of ``resource_type`` (in ``id_column``) the caller may read."""
        if self.compartment is None:
            return true()
        compartment_type, compartment_id = self.compartment
        if resource_type == compartment_type:
            return id_column == compartment_id
        hashes = self.members.get(resource_type)
        if not hashes:
            return false()
        ref = INDEX_TABLES["reference"].alias("gate_reference").c
        linked = select(ref.resource_id).where(
            ref.param_hash.in_(hashes),
            ref.resource_type == resource_type,
            ref.target_type == compartment_type,
            ref.target_id == compartment_id,
        )
        return id_column.in_(linked.correlate(None))

    def rows(self, type_column: ColumnElement[Any], id_column: ColumnElement[Any]) -> ColumnElement[bool]:
        """Which rows of any type (``type_column``, ``id_column``) the caller may read."""
        if self.compartment is None:
            return true()
        compartment_type, compartment_id = self.compartment
        hashes = sorted({h for member in self.members.values() for h in member})
        ref = INDEX_TABLES["reference"].alias("gate_reference").c
        linked = exists(
            select(ref.resource_id).where(
                ref.resource_type == type_column,
                ref.resource_id == id_column,
                ref.param_hash.in_(hashes),
                ref.target_type == compartment_type,
                ref.target_id == compartment_id,
            )
        )
        own = and_(type_column == compartment_type, id_column == compartment_id)
        return or_(own, linked) if hashes else own


OPEN = ReadGate()
