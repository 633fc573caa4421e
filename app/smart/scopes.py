"""SMART clinical scopes, parsed once into the permissions every interaction checks.

hl7.org/fhir/smart-app-launch/scopes-and-launch-context.html: a clinical scope
is ``<context>/<resource type>.<permissions>`` with context ``patient``,
``user`` or ``system``, resource type a FHIR type or ``*``, and permissions
either SMART v2's ``cruds`` letters (a subset, in that order, optionally
followed by ``?param=value&...`` to narrow them to matching resources) or
SMART v1's ``read``, ``write`` or ``*``. v1 maps to v2 as the IG says:
``read`` = ``rs``, ``write`` = ``cud``, ``*`` = ``cruds``.

What each letter permits (the IG's table):

- ``c``: create;
- ``r``: read, vread and instance history;
- ``u``: update and PATCH;
- ``d``: delete;
- ``s``: search at type and system level, type and system history.

``patient/`` scopes reach only the launch patient's compartment; ``user/``
and ``system/`` scopes reach every resource of their type the user or client
may see (for now, all). Scopes that are not clinical (``openid``,
``fhirUser``, ``launch``, ``launch/patient``, ``offline_access``,
``online_access``) grant no access to resources and are kept as they are.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from app.storage.gate import TypeAccess, TypeSet

Level = Literal["patient", "user", "system"]
Letter = Literal["c", "r", "u", "d", "s"]

LETTERS: tuple[Letter, ...] = ("c", "r", "u", "d", "s")
V1 = {"read": "rs", "write": "cud", "*": "cruds"}
_CLINICAL = re.compile(r"^(patient|user|system)/(\*|[A-Z][A-Za-z]{0,63})\.([a-z*]+)(?:\?(.+))?$")
_V2_LETTERS = re.compile(r"^c?r?u?d?s?$")


class ScopeError(ValueError):
    """A scope string that looks clinical (``patient/...``) but is not well formed."""


@dataclass(frozen=True, slots=True)
class ClinicalScope:
    """One parsed clinical scope: ``patient/CarePlan.rs`` is (patient, CarePlan, {r, s}, None)."""

    level: Level
    resource_type: str  # a FHIR type, or "*"
    letters: frozenset[Letter]
    query: str | None = None  # the granular ``?param=value`` narrowing, if any
    text: str = ""

    def covers(self, resource_type: str, letter: Letter) -> bool:
        return letter in self.letters and self.resource_type in ("*", resource_type)


def parse_scope(text: str) -> ClinicalScope | None:
    """The clinical scope ``text`` denotes; None for a scope that is not clinical (``openid``).

    A scope of clinical form with unknown permissions (``patient/CarePlan.xyz``) raises ``ScopeError``.
    """
    if "/" not in text or text.startswith("launch"):
        return None
    match = _CLINICAL.match(text)
    if match is None:
        raise ScopeError(f"'{text[:100]}' is not a SMART scope")
    level, resource_type, permissions, query = match.groups()
    if permissions in V1:
        if query is not None:
            raise ScopeError(f"'{text[:100]}': SMART v1 scopes take no query")
        letters = V1[permissions]
    elif permissions and _V2_LETTERS.match(permissions):
        letters = permissions
    else:
        raise ScopeError(f"'{text[:100]}': permissions must be read, write, * or letters of cruds in that order")
    return ClinicalScope(level, resource_type, frozenset(letters), query, text)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class Permissions:
    """What a token's clinical scopes permit, by level (``patient/`` scopes confine to a compartment)."""

    scopes: tuple[ClinicalScope, ...] = ()

    def allows(self, resource_type: str, letter: Letter) -> bool:
        """Whether any scope permits ``letter`` on ``resource_type`` (at any level)."""
        return any(scope.covers(resource_type, letter) for scope in self.scopes)

    def unconfined(self, resource_type: str, letter: Letter) -> bool:
        """Whether a ``user/`` or ``system/`` scope permits ``letter`` on ``resource_type`` without a
        compartment (and without a granular query)."""
        return any(
            scope.level != "patient" and scope.query is None and scope.covers(resource_type, letter)
            for scope in self.scopes
        )

    def types_for(self, letters: Iterable[Letter], level: Level | None = None) -> frozenset[str] | None:
        """The types some scope (of ``level``, if given) permits one of ``letters`` on; None for all (``*``)."""
        wanted = set(letters)
        types: set[str] = set()
        for scope in self.scopes:
            if (level is None or scope.level == level) and scope.letters & wanted:
                if scope.resource_type == "*":
                    return None
                types.add(scope.resource_type)
        return frozenset(types)

    def system_allows(self, resource_type: str, letter: Letter) -> bool:
        """Whether a ``system/`` scope without a query permits ``letter`` on ``resource_type``; for
        ``*``, only a scope on every type does."""
        return any(
            scope.level == "system"
            and scope.query is None
            and letter in scope.letters
            and scope.resource_type in ("*", resource_type)
            for scope in self.scopes
        )

    def type_access(self) -> TypeAccess:
        """Per letter, the types reached everywhere (``user/``, ``system/``) and inside the patient
        compartment (``patient/``). A granular scope (``?category=...``) is left out here: it needs
        the search registry to become SQL, and ``FhirContext.read_gate`` adds it as a ``NarrowGrant``."""
        everywhere: dict[str, TypeSet] = {}
        inside: dict[str, TypeSet] = {}
        for letter in LETTERS:
            everywhere[letter] = self._types(letter, ("user", "system"))
            inside[letter] = self._types(letter, ("patient",))
        return TypeAccess(everywhere, inside)

    def _types(self, letter: Letter, levels: tuple[Level, ...]) -> TypeSet:
        types: set[str] = set()
        for scope in self.scopes:
            if scope.level in levels and scope.query is None and letter in scope.letters:
                if scope.resource_type == "*":
                    return None
                types.add(scope.resource_type)
        return frozenset(types)

    @property
    def has_patient_scopes(self) -> bool:
        return any(scope.level == "patient" for scope in self.scopes)

    @property
    def has_system_scopes(self) -> bool:
        return any(scope.level == "system" for scope in self.scopes)


def parse_permissions(scope: str) -> Permissions:
    """The permissions of a space-separated scope string; malformed clinical scopes raise ``ScopeError``."""
    parsed = (parse_scope(text) for text in scope.split())
    return Permissions(tuple(found for found in parsed if found is not None))


def covered_by(requested: str, registered: Iterable[str]) -> bool:
    """Whether the scope ``requested`` is one a client registered for, or is narrower than one of them
    (``patient/CarePlan.rs`` under ``patient/*.cruds``; ``patient/Task.read`` under ``patient/Task.rs``)."""
    registered = list(registered)
    if requested in registered:
        return True
    try:
        wanted = parse_scope(requested)
    except ScopeError:
        return False
    if wanted is None:
        return False
    for text in registered:
        try:
            have = parse_scope(text)
        except ScopeError:
            continue
        if (
            have is not None
            and have.level == wanted.level
            and have.resource_type in ("*", wanted.resource_type)
            and wanted.letters <= have.letters
            and (have.query is None or have.query == wanted.query)
        ):
            return True
    return False
