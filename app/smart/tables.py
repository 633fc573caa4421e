"""Tables of the authorization server: clients, users, signing keys, codes, refresh tokens, revocations
and used assertions.

Everything a token check or a grant needs lives here, not in process memory, so
that any number of server processes share it: a client registered with
``fhir-server client add`` is usable by a running server at once, a key
rotated by one process verifies in all, and a revocation reaches every
process at its next poll (``app.smart.tokens``).
"""

from __future__ import annotations

from sqlalchemy import Column, Index, String, Table, Text

from app.storage.tables import UTCDateTime, metadata

clients = Table(
    "smart_clients",
    metadata,
    Column("client_id", String(255), primary_key=True),
    Column("client_type", String(32), nullable=False),  # public | confidential-symmetric | confidential-asymmetric
    Column("secret_hash", Text, nullable=True),  # argon2id, confidential-symmetric only
    Column("jwks", Text, nullable=True),  # registered JWKS (JSON), confidential-asymmetric
    Column("jwks_url", Text, nullable=True),  # or where to fetch it
    Column("redirect_uris", Text, nullable=False),  # JSON list, compared by exact match
    Column("scope", Text, nullable=False),  # space-separated scopes the client may be granted
    Column("created", UTCDateTime(), nullable=False),
)

users = Table(
    "smart_users",
    metadata,
    Column("username", String(255), primary_key=True),
    Column("password_hash", Text, nullable=False),  # argon2id
    Column("fhir_user", String(255), nullable=False),  # Practitioner/ID, Patient/ID or RelatedPerson/ID
    Column("created", UTCDateTime(), nullable=False),
)

signing_keys = Table(
    "smart_signing_keys",
    metadata,
    Column("kid", String(64), primary_key=True),
    Column("private_jwk", Text, nullable=False),  # JSON Web Key with its private part
    Column("created", UTCDateTime(), nullable=False),
    Column("retired", UTCDateTime(), nullable=True),  # no longer signs; verifies until its tokens expire
)

revocations = Table(
    "smart_revocations",
    metadata,
    Column("token_id", String(64), primary_key=True),  # an access token's jti, or a grant id
    Column("revoked", UTCDateTime(), nullable=False),
    Column("expires", UTCDateTime(), nullable=False),  # after this the token is dead anyway
    Index("ix_smart_revocations_revoked", "revoked"),
)

used_assertions = Table(
    "smart_used_assertions",
    metadata,
    Column("client_id", String(255), primary_key=True),
    Column("jti", String(255), primary_key=True),
    Column("expires", UTCDateTime(), nullable=False),
)

codes = Table(
    "smart_codes",
    metadata,
    Column("code_hash", String(64), primary_key=True),  # SHA-256 of the code: the code itself is never stored
    Column("client_id", String(255), nullable=False),
    Column("redirect_uri", Text, nullable=False),
    Column("scope", Text, nullable=False),
    Column("code_challenge", String(128), nullable=False),  # PKCE S256
    Column("grant_id", String(64), nullable=False),  # revoked with every token issued from it on reuse
    Column("context", Text, nullable=False),  # JSON: patient, encounter, fhir_user, username, nonce
    Column("expires", UTCDateTime(), nullable=False),
    Column("used", UTCDateTime(), nullable=True),
)

refresh_tokens = Table(
    "smart_refresh_tokens",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("grant_id", String(64), nullable=False),
    Column("client_id", String(255), nullable=False),
    Column("scope", Text, nullable=False),
    Column("context", Text, nullable=False),
    Column("expires", UTCDateTime(), nullable=False),
    Column("used", UTCDateTime(), nullable=True),  # rotation: a used refresh token is refused
    Index("ix_smart_refresh_tokens_grant", "grant_id"),
)
