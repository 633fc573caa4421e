"""Who is asking, and how: one immutable object per request, passed to every interaction.

The caller is the only way an interaction learns who asks. With authorization on,
the bearer token decides it (``app.api.auth``): its scopes become ``permissions``
and its launch patient the ``compartment`` that ``patient/`` scopes confine to
(hl7.org/fhir/smart-app-launch/scopes-and-launch-context.html); the read and
write gates turn both into SQL conditions and 403s. ``UNRESTRICTED`` is the
caller of a server run with ``FHIR_AUTH=off`` and of the server's own work.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

from app.errors import Forbidden
from app.smart.scopes import Permissions
from app.storage.gate import TypeAccess

PreferReturn = Literal["minimal", "representation", "OperationOutcome"]


@dataclass(frozen=True, slots=True)
class Caller:
    """Who asks. ``permissions``: what its token's scopes grant (None: everything); ``compartment``
    (type, id): where ``patient/`` scopes reach (without permissions: where everything is confined)."""

    name: str
    compartment: tuple[str, str] | None = None
    permissions: Permissions | None = None
    fhir_user: str | None = None
    access: TypeAccess | None = None  # ``permissions.type_access()``, computed once per caller

    @classmethod
    def with_token(
        cls, name: str, permissions: Permissions, compartment: tuple[str, str] | None, fhir_user: str | None
    ) -> Caller:
        return cls(name, compartment, permissions, fhir_user, permissions.type_access())

    @property
    def unrestricted(self) -> bool:
        return self.compartment is None and self.permissions is None

    def require_system(self, maintains: str | None = None) -> None:
        """Server-wide work is for backend services: a token with ``system/`` scopes, or a server
        running without authorization (403 otherwise). ``maintains``: the work rewrites what the server
        stores of that type (``*``: of every type), as ``$reindex`` does, which takes ``system/`` update
        permission on it."""
        if self.permissions is None:
            return
        if not self.permissions.has_system_scopes:
            raise Forbidden("this operation needs a token with system/ scopes (a backend service)")
        if maintains is not None and not self.permissions.system_allows(maintains, "u"):
            what = "every resource type" if maintains == "*" else maintains
            raise Forbidden(f"this operation needs a system/ scope that permits update of {what}")


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
