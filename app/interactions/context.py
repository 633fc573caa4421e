"""What every interaction needs, built once by the app factory."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from app.errors import NotFound
from app.storage.database import Database
from app.storage.repository import StoredVersion
from app.validation.validator import ResourceValidator


@dataclass(frozen=True, slots=True)
class FhirContext:
    db: Database
    validator: ResourceValidator
    resource_types: frozenset[str]

    def require_type(self, resource_type: str) -> None:
        if resource_type not in self.resource_types:
            raise NotFound(f"Unknown resource type '{resource_type}'")


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
