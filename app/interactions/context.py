"""What every interaction needs, built once by the app factory."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from app.errors import InvalidRequest, NotFound
from app.storage.database import Database
from app.storage.repository import StoredVersion
from app.validation.validator import ResourceValidator

ID_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-.")


def is_valid_id(resource_id: str) -> bool:
    """FHIR ids: 1-64 characters of [A-Za-z0-9-.] (hl7.org/fhir/R4/datatypes.html#id)."""
    return 1 <= len(resource_id) <= 64 and set(resource_id) <= ID_CHARS


def require_valid_id(resource_id: str) -> None:
    if not is_valid_id(resource_id):
        raise InvalidRequest(f"'{resource_id[:80]}' is not a valid FHIR id ([A-Za-z0-9-.]{{1,64}})", ["id"])


@dataclass(frozen=True, slots=True)
class FhirContext:
    db: Database
    validator: ResourceValidator
    resource_types: frozenset[str]

    def require_type(self, resource_type: str) -> None:
        if resource_type not in self.resource_types:
            raise NotFound(f"Unknown resource type '{resource_type[:80]}'")

    def require_known(self, resource_type: str, resource_id: str) -> None:
        """Type must be served; an id that can never exist is simply not found."""
        self.require_type(resource_type)
        if not is_valid_id(resource_id):
            raise NotFound(f"{resource_type}/{resource_id[:80]} is not known")


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
    """FHIR ``instant`` with microseconds, always UTC (``Z``)."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
