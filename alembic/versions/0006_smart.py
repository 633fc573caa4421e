"""The SMART on FHIR authorization server's tables (``app.smart.tables``).

Clients and users are registered with the ``fhir-server client|user`` commands,
signing keys are generated on first start and rotated with ``fhir-server keys
rotate``, revocations are polled by every server process, and the ``jti`` of
every client assertion is kept until it expires so a replay is refused
(hl7.org/fhir/smart-app-launch/client-confidential-asymmetric.html).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa

from alembic import op
from app.storage.tables import UTCDateTime

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "smart_clients",
        sa.Column("client_id", sa.String(255), primary_key=True),
        sa.Column("client_type", sa.String(32), nullable=False),
        sa.Column("secret_hash", sa.Text, nullable=True),
        sa.Column("jwks", sa.Text, nullable=True),
        sa.Column("jwks_url", sa.Text, nullable=True),
        sa.Column("redirect_uris", sa.Text, nullable=False),
        sa.Column("scope", sa.Text, nullable=False),
        sa.Column("created", UTCDateTime(), nullable=False),
    )
    op.create_table(
        "smart_users",
        sa.Column("username", sa.String(255), primary_key=True),
        sa.Column("password_hash", sa.Text, nullable=False),
        sa.Column("fhir_user", sa.String(255), nullable=False),
        sa.Column("created", UTCDateTime(), nullable=False),
    )
    op.create_table(
        "smart_signing_keys",
        sa.Column("kid", sa.String(64), primary_key=True),
        sa.Column("private_jwk", sa.Text, nullable=False),
        sa.Column("created", UTCDateTime(), nullable=False),
        sa.Column("retired", UTCDateTime(), nullable=True),
    )
    op.create_table(
        "smart_revocations",
        sa.Column("token_id", sa.String(64), primary_key=True),
        sa.Column("revoked", UTCDateTime(), nullable=False),
        sa.Column("expires", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_smart_revocations_revoked", "smart_revocations", ["revoked"])
    op.create_table(
        "smart_used_assertions",
        sa.Column("client_id", sa.String(255), primary_key=True),
        sa.Column("jti", sa.String(255), primary_key=True),
        sa.Column("expires", UTCDateTime(), nullable=False),
    )

    op.create_table(
        "smart_codes",
        sa.Column("code_hash", sa.String(64), primary_key=True),
        sa.Column("client_id", sa.String(255), nullable=False),
        sa.Column("redirect_uri", sa.Text, nullable=False),
        sa.Column("scope", sa.Text, nullable=False),
        sa.Column("code_challenge", sa.String(128), nullable=False),
        sa.Column("grant_id", sa.String(64), nullable=False),
        sa.Column("context", sa.Text, nullable=False),
        sa.Column("expires", UTCDateTime(), nullable=False),
        sa.Column("used", UTCDateTime(), nullable=True),
    )
    op.create_table(
        "smart_refresh_tokens",
        sa.Column("token_hash", sa.String(64), primary_key=True),
        sa.Column("grant_id", sa.String(64), nullable=False),
        sa.Column("client_id", sa.String(255), nullable=False),
        sa.Column("scope", sa.Text, nullable=False),
        sa.Column("context", sa.Text, nullable=False),
        sa.Column("expires", UTCDateTime(), nullable=False),
        sa.Column("used", UTCDateTime(), nullable=True),
    )
    op.create_index("ix_smart_refresh_tokens_grant", "smart_refresh_tokens", ["grant_id"])


TABLES = (
    "smart_refresh_tokens",
    "smart_codes",
    "smart_used_assertions",
    "smart_revocations",
    "smart_signing_keys",
    "smart_users",
    "smart_clients",
)


def downgrade() -> None:
    for name in TABLES:
        op.drop_table(name)
