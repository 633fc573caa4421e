"""Settings from the environment, prefix ``FHIR_`` (pydantic-settings).

The settings object is built by the app factory and passed down explicitly;
no module reads the environment on import.
"""

from __future__ import annotations

from typing import Literal
from urllib.parse import urljoin

from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class TrustedIssuerSetting(BaseModel):
    """An external authorization server whose access tokens are accepted (``FHIR_AUTH_TRUSTED_ISSUERS``)."""

    issuer: str
    jwks_url: str
    audience: str


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FHIR_", extra="ignore")

    database_url: str = Field(
        default="sqlite+aiosqlite:///./data/fhir.sqlite",
        description="SQLAlchemy async URL: sqlite+aiosqlite:///path or postgresql+asyncpg://user@host/db",
    )
    host: str = Field(default="127.0.0.1", description="Interface to listen on")
    port: int = Field(default=8080, description="TCP port to listen on")
    base_url: str | None = Field(
        default=None,
        description="Public base URL used in fullUrl, Location and paging links (default http://{host}:{port}/fhir)",
    )
    workers: int = Field(default=1, ge=1, description="uvicorn worker processes")
    max_body_bytes: int = Field(default=10 * 1024 * 1024, ge=1, description="Largest accepted request body")
    default_page_size: int = Field(default=50, ge=1, description="_count when the client gives none")
    max_page_size: int = Field(default=1000, ge=1, description="Largest _count honoured")
    log_level: str = Field(default="info", description="Python log level of the server")
    db_pool_size: int = Field(default=20, ge=1, description="Database connections per worker process")
    max_bundle_entries: int = Field(
        default=10_000, ge=1, description="Most entries accepted in one transaction or batch Bundle"
    )
    max_array_items: int = Field(
        default=10_000, ge=1, description="Most items in any one JSON array of a resource (json.html); more is 400"
    )
    max_json_depth: int = Field(default=64, ge=4, description="Deepest nesting of JSON objects in a resource")
    max_bundle_response_resources: int = Field(
        default=10_000,
        ge=1,
        description="Most resources one transaction or batch response carries (reads, search pages, includes)",
    )
    db_statement_timeout: float = Field(
        default=30, gt=0, description="PostgreSQL statement_timeout in seconds for every request's statements"
    )
    search_parameter_refresh_seconds: float = Field(
        default=10, gt=0, description="How often each worker checks for SearchParameters stored by another worker"
    )

    auth: Literal["on", "off"] = Field(
        default="on",
        description="SMART on FHIR authorization of every FHIR interaction; off only for local experiments",
    )
    auth_token_seconds: int = Field(
        default=3600, ge=60, le=3600, description="Lifetime of access tokens issued to apps (at most an hour)"
    )
    auth_backend_token_seconds: int = Field(
        default=300, ge=60, le=3600, description="Lifetime of access tokens issued to backend services"
    )
    auth_revocation_poll_seconds: float = Field(
        default=2,
        gt=0,
        description="How often each worker reads revocations and signing keys from the database (with FHIR_AUTH=off, "
        "at least every 60 s)",
    )

    auth_trusted_issuers: list[TrustedIssuerSetting] = Field(
        default_factory=list,
        description='JSON list of external issuers whose tokens are accepted: [{"issuer": ..., "jwks_url": ..., '
        '"audience": ...}]',
    )

    subscription_retry_hours: float = Field(
        default=24, gt=0, description="How long a failing Subscription endpoint is retried before the status is error"
    )
    subscription_allow_http: bool = Field(
        default=False, description="Allow http:// rest-hook endpoints beyond the loopback interface (tests only)"
    )
    subscription_allowed_hosts: list[str] = Field(
        default_factory=list,
        description='JSON list of hosts rest-hooks may reach although private or link-local: ["hooks.internal"]',
    )
    subscription_timeout_seconds: float = Field(
        default=10, gt=0, le=60, description="How long one rest-hook notification may take"
    )
    subscription_lease_seconds: float = Field(
        default=60,
        ge=2,
        description="How long a worker holds a subscription it delivers; after a crash another worker resumes "
        "it once this has passed (kept above twice the notification timeout)",
    )
    subscription_attempts_keep_days: float = Field(
        default=7, gt=0, description="How long the record of each notification attempt is kept"
    )
    subscription_poll_seconds: float = Field(
        default=1, gt=0, description="How often each worker looks for due notifications and Subscription changes"
    )
    subscription_delivery: Literal["auto", "process", "inline"] = Field(
        default="auto",
        description="Who sends notifications: process = a delivery process beside the server's workers, "
        "started by serve (PostgreSQL only); inline = each worker, between requests; auto = process on PostgreSQL, "
        "inline on SQLite",
    )

    @property
    def delivery_process(self) -> bool:
        """Notifications are sent by a process of their own (``fhir-server deliver``), not by the workers."""
        return self.subscription_delivery != "inline" and self.database_url.startswith("postgresql")

    @property
    def auth_enforced(self) -> bool:
        return self.auth == "on"

    def smart_url(self, name: str) -> str:
        """An endpoint of the authorization server, beside the FHIR base: ``http://h:p/fhir`` gives
        ``http://h:p/smart/<name>``."""
        return urljoin(self.public_base_url + "/", f"../smart/{name}")

    @property
    def public_base_url(self) -> str:
        if self.base_url:
            return self.base_url.rstrip("/")
        return f"http://{self.host}:{self.port}/fhir"
