"""What every interaction needs, built once by the app factory."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from app import fhirjson
from app.errors import InvalidRequest, NotFound
from app.interactions.request_context import Caller
from app.search.extraction import Extractor
from app.search.gate import OPEN, ReadGate, compartment_gate, narrowing
from app.search.indexing import build_index_rows
from app.search.registry import SearchRegistry
from app.storage.database import Database
from app.storage.gate import Author, NarrowGrant
from app.storage.index_tables import IndexRows
from app.storage.repository import StoredVersion
from app.storage.row_keys import RowKeys
from app.storage.writes import ResourceWriter
from app.validation.json_rules import ShapeReport
from app.validation.validator import ResourceValidator

# Bodies larger than this (as JSON) are validated in a worker thread: fhir.resources needs about
# 1 ms per 5 KB, and the event loop must keep answering other clients meanwhile.
OFFLOAD_BYTES = 64 * 1024

ID_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-.")


def is_valid_id(resource_id: str) -> bool:
    """FHIR ids: 1-64 characters of [A-Za-z0-9-.] (hl7.org/fhir/R4/datatypes.html#id)."""
    return 1 <= len(resource_id) <= 64 and set(resource_id) <= ID_CHARS


def require_valid_id(resource_id: str) -> None:
    if not is_valid_id(resource_id):
        raise InvalidRequest(f"'{resource_id[:80]}' is not a valid FHIR id ([A-Za-z0-9-.]{{1,64}})", ["id"])


@dataclass(frozen=True, slots=True)
class FhirContext:
    """What every interaction needs, built once per process and never changed: when clients add
    SearchParameters a new context with a new registry and extractor replaces it whole
    (``ContextHolder``); ``base_registry`` is the official set."""

    db: Database
    validator: ResourceValidator
    resource_types: frozenset[str]
    registry: SearchRegistry
    extractor: Extractor
    writer: ResourceWriter
    base_registry: SearchRegistry | None = None

    def read_gate(self, caller: Caller) -> ReadGate:
        """What ``caller`` may read and do (``app.storage.gate``): everything, one compartment, or what
        its scopes grant (``patient/`` scopes inside its compartment). A token's gate names its
        ``author`` for the write hooks."""
        if caller.permissions is None:
            if caller.compartment is None:
                return OPEN
            return compartment_gate(self.registry, *caller.compartment)
        author = Author(caller.name, " ".join(scope.text for scope in caller.permissions.scopes), caller.compartment)
        access = caller.access if caller.access is not None else caller.permissions.type_access()
        if access.everything:  # system/*.cruds: nothing to add, and writes keep their fastest path
            return ReadGate(author=author)
        grants = self._narrow_grants(caller)
        if grants:
            access = replace(access, narrowed=grants)
        if caller.compartment is None:
            return ReadGate(None, {}, access, author)
        return replace(compartment_gate(self.registry, *caller.compartment, access), author=author)

    def _narrow_grants(self, caller: Caller) -> tuple[NarrowGrant, ...]:
        """The granular scopes of the caller's token, each with the SQL its query compiles to."""
        assert caller.permissions is not None
        grants = []
        for scope in caller.permissions.scopes:
            if scope.query is None or scope.resource_type == "*" or scope.resource_type not in self.resource_types:
                continue
            condition = narrowing(self.registry, scope.resource_type, scope.query)
            if condition is not None:
                grants.append(
                    NarrowGrant(scope.resource_type, frozenset(scope.letters), scope.level == "patient", condition)
                )
        return tuple(grants)

    def with_registry(self, registry: SearchRegistry) -> FhirContext:
        """A context that searches and indexes with ``registry`` (registry and extractor together)."""
        return replace(self, registry=registry, extractor=Extractor(registry, self.extractor.use_fast_path))

    async def check(self, resource_type: str, body: dict[str, Any]) -> ShapeReport:
        """Validate ``body`` (``ResourceValidator.validate``); a large body in a worker thread, so
        validating it does not hold up every other request on the event loop."""
        if len(fhirjson.dumps(body)) > OFFLOAD_BYTES:
            report = await asyncio.to_thread(self.validator.validate, resource_type, body)
            report.large = True
            return report
        return self.validator.validate(resource_type, body)

    async def index_rows_checked(
        self, resource_type: str, resource_id: str, body: dict[str, Any], report: ShapeReport
    ) -> IndexRows:
        """``index_rows``, in a worker thread for a body ``check`` found large (extraction is CPU work
        proportional to the body: a 9 MB Patient's string rows take over a second)."""
        if report.large:
            return await asyncio.to_thread(self.index_rows, resource_type, resource_id, body)
        return self.index_rows(resource_type, resource_id, body)

    def index_rows(self, resource_type: str, resource_id: str, body: dict[str, Any]) -> IndexRows:
        """Index rows of a body; computed before the write transaction opens."""
        return build_index_rows(
            resource_type,
            resource_id,
            self.extractor.extract(resource_type, body),
            self.extractor.extract_composites(resource_type, body),
        )

    def row_keys(self, resource_type: str, rows: IndexRows) -> RowKeys:
        """The search values the resource's row carries itself, taken from its index rows."""
        return self.registry.row_key_rule(resource_type).keys(rows)

    def require_type(self, resource_type: str) -> None:
        if resource_type not in self.resource_types:
            raise NotFound(f"Unknown resource type '{resource_type[:80]}'")

    def require_known(self, resource_type: str, resource_id: str) -> None:
        """Type must be served; an id that can never exist is simply not found."""
        self.require_type(resource_type)
        if not is_valid_id(resource_id):
            raise NotFound(f"{resource_type}/{resource_id[:80]} is not known")


class ContextHolder:
    """The process's current ``FhirContext``: requests take it once, at their start, so one request
    uses one registry throughout even when another installs a new one meanwhile."""

    __slots__ = ("current", "search_parameters_seen")

    def __init__(self, context: FhirContext) -> None:
        self.current = context
        self.search_parameters_seen: object = None


@dataclass(frozen=True, slots=True)
class WriteResult:
    """Outcome of a create, update or delete: the HTTP layer maps ``status`` and headers."""

    status: int
    stored: StoredVersion
    created: bool = False
    changed: bool = True


def utc_now() -> datetime:
    return datetime.now(UTC)


def format_instant(value: datetime) -> str:
    """FHIR ``instant`` with microseconds, always UTC (``Z``); four-digit years even before 1000."""
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"
