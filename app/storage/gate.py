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

A gate also carries what the caller may do with each resource type
(``TypeAccess``, built from SMART scopes): for each interaction letter of
SMART v2 (``c`` create, ``r`` read, ``u`` update, ``d`` delete, ``s``
search), the types it reaches everywhere (``user/``, ``system/`` scopes)
and the types it reaches only inside the compartment (``patient/``
scopes). Interactions ``require`` a letter (403 without it), the rows
condition admits exactly the types readable with ``r`` or ``s``, and the
write gate (``app.storage.writes``) checks that what a confined caller
writes lands inside its compartment.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from sqlalchemy import ColumnElement, and_, exists, false, or_, select, true

from app.errors import Forbidden
from app.storage.index_tables import INDEX_TABLES, IndexRows

Letter = Literal["c", "r", "u", "d", "s"]
Reach = Literal["all", "compartment", "narrowed", "none"]
Narrowing = Callable[[ColumnElement[Any]], ColumnElement[bool]]
"""Which ids (in the given id column) a granular scope's query matches, as SQL."""
TypeSet = frozenset[str] | None
"""Resource types; None stands for every type (a ``*`` scope)."""

VERBS = {"c": "create", "r": "read", "u": "update", "d": "delete", "s": "search"}
READ_LETTERS: tuple[Letter, ...] = ("r", "s")


def _contains(types: TypeSet, resource_type: str) -> bool:
    return types is None or resource_type in types


def _union(first: TypeSet, second: TypeSet) -> TypeSet:
    if first is None or second is None:
        return None
    return first | second


@dataclass(frozen=True, slots=True)
class NarrowGrant:
    """A granular scope (``patient/Observation.rs?category=laboratory``): ``letters`` on
    ``resource_type`` only for the resources its query matches (``matching``), inside the
    compartment when ``confined`` (a ``patient/`` scope)."""

    resource_type: str
    letters: frozenset[str]
    confined: bool
    matching: Narrowing


@dataclass(frozen=True, slots=True)
class TypeAccess:
    """Per interaction letter: the types reached everywhere, and the types reached inside the
    compartment; and the granular grants, which reach only what their queries match."""

    everywhere: Mapping[str, TypeSet] = field(default_factory=dict)
    in_compartment: Mapping[str, TypeSet] = field(default_factory=dict)
    narrowed: tuple[NarrowGrant, ...] = ()

    def grants(self, resource_type: str, letters: tuple[Letter, ...]) -> list[NarrowGrant]:
        return [g for g in self.narrowed if g.resource_type == resource_type and g.letters & set(letters)]

    @property
    def everything(self) -> bool:
        """Every letter on every type, everywhere (``system/*.cruds``): a gate that adds nothing."""
        return all(self.everywhere.get(letter, frozenset()) is None for letter in VERBS)

    def reach(self, resource_type: str, letter: Letter) -> Reach:
        if _contains(self.everywhere.get(letter, frozenset()), resource_type):
            return "all"
        if _contains(self.in_compartment.get(letter, frozenset()), resource_type):
            return "compartment"
        if self.grants(resource_type, (letter,)):
            return "narrowed"
        return "none"

    def read_types(self) -> tuple[TypeSet, TypeSet]:
        """(types readable everywhere, types readable in the compartment) with ``r`` or ``s``."""
        everywhere: TypeSet = frozenset()
        inside: TypeSet = frozenset()
        for letter in READ_LETTERS:
            everywhere = _union(everywhere, self.everywhere.get(letter, frozenset()))
            inside = _union(inside, self.in_compartment.get(letter, frozenset()))
        return everywhere, inside


@dataclass(frozen=True, slots=True)
class Author:
    """Who makes a write, as the write's hooks may need to keep it: the scopes of the access token
    (space-separated) and the compartment its ``patient/`` scopes confine to. A Subscription keeps
    its author's so that it never notifies of what the author could not read."""

    name: str
    scope: str | None = None
    compartment: tuple[str, str] | None = None


@dataclass(frozen=True, slots=True)
class ReadGate:
    """``compartment`` (type, id) is the caller's compartment; ``members``: per member type, the hashes
    of the parameters that link its resources to the compartment; ``access``: what the caller may do
    with each type (None: everything, everywhere or, with a compartment, inside it)."""

    compartment: tuple[str, str] | None = None
    members: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    access: TypeAccess | None = None
    author: Author | None = None  # the token behind the gate (None: the server's own work, or no token)

    @property
    def open(self) -> bool:
        return self.compartment is None and self.access is None

    def reach(self, resource_type: str, letter: Letter) -> Reach:
        if self.access is None:
            return "all" if self.compartment is None else "compartment"
        return self.access.reach(resource_type, letter)

    def permits(self, resource_type: str, letter: Letter) -> bool:
        return self.reach(resource_type, letter) != "none"

    def require(self, resource_type: str, letter: Letter) -> None:
        """Refuse (403) an interaction the caller's scopes do not grant on ``resource_type``."""
        if not self.permits(resource_type, letter):
            raise Forbidden(f"the access token does not permit {VERBS[letter]} of {resource_type}")

    def require_any(self, letter: Letter) -> None:
        """Refuse (403) a system-level interaction when no type at all is granted ``letter``."""
        if self.access is None:
            return
        if (
            self.access.everywhere.get(letter, frozenset()) == frozenset()
            and self.access.in_compartment.get(letter, frozenset()) == frozenset()
            and not any(letter in grant.letters for grant in self.access.narrowed)
        ):
            raise Forbidden(f"the access token does not permit {VERBS[letter]} of any resource type")

    def admits(self, resource_type: str, resource_id: str, rows: IndexRows, letter: Letter) -> None:
        """Refuse (403) a write that would put a resource outside the compartment of a caller who may
        write ``resource_type`` only inside it: the resource must be the compartment's own, or refer
        to it through one of its compartment parameters (judged on the new version's index rows)."""
        reach = self.reach(resource_type, letter)
        if reach in ("all", "narrowed"):  # a narrowed write is checked once stored (``matches_after_write``)
            return
        if reach == "none":
            raise Forbidden(f"the access token does not permit {VERBS[letter]} of {resource_type}")
        if self.compartment is None:
            raise Forbidden(f"the access token has no patient context for {VERBS[letter]} of {resource_type}")
        compartment_type, compartment_id = self.compartment
        if resource_type == compartment_type and resource_id == compartment_id:
            return
        hashes = set(self.members.get(resource_type, ()))
        for row in rows.get("reference", ()):
            if (
                row.get("param_hash") in hashes
                and row.get("target_type") == compartment_type
                and row.get("target_id") == compartment_id
            ):
                return
        raise Forbidden(
            f"{resource_type}/{resource_id} would be outside the compartment {compartment_type}/{compartment_id} "
            "the access token is limited to"
        )

    def narrowed_write(self, resource_type: str, letter: Letter) -> bool:
        """Whether a write is permitted only by granular scopes: then what it stores (or, for a
        delete, what it removes) must match one of their queries (``write_match``)."""
        return self.reach(resource_type, letter) == "narrowed"

    def write_match(self, resource_type: str, letter: Letter, id_column: ColumnElement[Any]) -> ColumnElement[bool]:
        """The ids of ``resource_type`` a narrowed ``letter`` may write."""
        assert self.access is not None
        return self._narrowed(self.access.grants(resource_type, (letter,)), resource_type, id_column)

    def _narrowed(
        self, grants: list[NarrowGrant], resource_type: str, id_column: ColumnElement[Any]
    ) -> ColumnElement[bool]:
        parts: list[ColumnElement[bool]] = []
        for grant in grants:
            condition = grant.matching(id_column)
            if grant.confined:
                condition = and_(condition, self._compartment_ids(resource_type, id_column))
            parts.append(condition)
        return or_(*parts) if parts else false()

    def ids(self, resource_type: str, id_column: ColumnElement[Any]) -> ColumnElement[bool]:
        """Which ids of ``resource_type`` (in ``id_column``) the caller may read."""
        reach = self.read_reach(resource_type)
        if reach == "all":
            return true()
        if reach == "narrowed":
            assert self.access is not None
            return self._narrowed(self.access.grants(resource_type, READ_LETTERS), resource_type, id_column)
        if reach == "none":
            return false()
        return self._compartment_ids(resource_type, id_column)

    def _compartment_ids(self, resource_type: str, id_column: ColumnElement[Any]) -> ColumnElement[bool]:
        if self.compartment is None:
            return false()
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

    def read_reach(self, resource_type: str) -> Reach:
        """How far the caller may read ``resource_type``: all, its compartment, narrowed, or none."""
        reaches = {self.reach(resource_type, letter) for letter in READ_LETTERS}
        for reach in ("all", "compartment", "narrowed"):
            if reach in reaches:
                return reach
        return "none"

    def rows(self, type_column: ColumnElement[Any], id_column: ColumnElement[Any]) -> ColumnElement[bool]:
        """Which rows of any type (``type_column``, ``id_column``) the caller may read."""
        if self.access is None:
            if self.compartment is None:
                return true()
            return self._compartment_rows(type_column, id_column, None)
        everywhere, inside = self.access.read_types()
        if everywhere is None:
            return true()
        parts: list[ColumnElement[bool]] = []
        if everywhere:
            parts.append(type_column.in_(sorted(everywhere)))
        if self.compartment is not None and inside != frozenset():
            parts.append(self._compartment_rows(type_column, id_column, inside))
        for grant in self.access.narrowed:
            if grant.letters & set(READ_LETTERS) and (self.compartment is not None or not grant.confined):
                part = and_(type_column == grant.resource_type, grant.matching(id_column))
                if grant.confined:
                    part = and_(part, self._compartment_rows(type_column, id_column, frozenset({grant.resource_type})))
                parts.append(part)
        return or_(*parts) if parts else false()

    def _compartment_rows(
        self, type_column: ColumnElement[Any], id_column: ColumnElement[Any], types: TypeSet
    ) -> ColumnElement[bool]:
        assert self.compartment is not None
        compartment_type, compartment_id = self.compartment
        hashes = sorted({h for member in self.members.values() for h in member})
        ref = INDEX_TABLES["reference"].alias("gate_reference").c
        linked: ColumnElement[bool] = exists(
            select(ref.resource_id).where(
                ref.resource_type == type_column,
                ref.resource_id == id_column,
                ref.param_hash.in_(hashes),
                ref.target_type == compartment_type,
                ref.target_id == compartment_id,
            )
        )
        own = and_(type_column == compartment_type, id_column == compartment_id)
        if types is not None:
            linked = and_(type_column.in_(sorted(types)), linked)
            if compartment_type not in types:
                own = false()
        return or_(own, linked) if hashes else own


OPEN = ReadGate()
