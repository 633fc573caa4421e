"""Who is asking, and how: one immutable object per request, passed to every interaction.

The caller is the only way an interaction learns who asks. Until SMART on FHIR
authenticates callers every request runs as ``UNRESTRICTED``; a caller with a
``compartment`` sees and changes only resources of that compartment (the read
gate turns it into a SQL condition), which is how patient-scoped access will
work (hl7.org/fhir/smart-app-launch/scopes-and-launch-context.html).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

PreferReturn = Literal["minimal", "representation", "OperationOutcome"]


@dataclass(frozen=True, slots=True)
class Caller:
    """An authenticated (or not) party; ``compartment`` (type, id) confines it to one compartment."""

    name: str
    compartment: tuple[str, str] | None = None

    @property
    def unrestricted(self) -> bool:
        return self.compartment is None


UNRESTRICTED = Caller("unrestricted")


@dataclass(frozen=True, slots=True)
class RequestLimits:
    """The configured bounds a request works within (FHIR_* settings)."""

    max_body_bytes: int = 10 * 1024 * 1024
    default_page_size: int = 50
    max_page_size: int = 1000
    max_bundle_entries: int = 10_000
    max_bundle_response_resources: int = 10_000


@dataclass(frozen=True, slots=True)
class RequestContext:
    """What one request brings besides its body: caller, public base URL, ``Prefer``, the time it came,
    and the limits it works within."""

    caller: Caller = UNRESTRICTED
    base_url: str = ""
    prefer_return: PreferReturn = "representation"
    strict: bool = False  # Prefer: handling=strict (search.html#errors)
    now: datetime = field(default_factory=lambda: datetime.now(UTC))
    request_id: str | None = None
    limits: RequestLimits = RequestLimits()
