"""Typed search-index tables keyed by a 64-bit parameter hash; drop the interim token table.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa

from alembic import op
from app.storage.tables import UTCDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

C_TEXT = sa.Text().with_variant(sa.Text(collation="C"), "postgresql")


def _create(name: str, columns: list[sa.Column], value_index: list[str]) -> None:
    op.create_table(
        name,
        sa.Column("resource_type", sa.String(64), nullable=False),
        sa.Column("resource_id", sa.String(64), nullable=False),
        sa.Column("param_hash", sa.BigInteger, nullable=False),
        *columns,
    )
    op.create_index(f"ix_{name}_value", name, ["param_hash", *value_index])
    op.create_index(f"ix_{name}_resource", name, ["resource_type", "resource_id"])


def upgrade() -> None:
    op.drop_table("search_token")
    _create(
        "idx_string",
        [sa.Column("value_norm", C_TEXT, nullable=False), sa.Column("value_exact", sa.Text, nullable=False)],
        ["value_norm"],
    )
    _create(
        "idx_token",
        [
            sa.Column("system", C_TEXT, nullable=True),
            sa.Column("code", C_TEXT, nullable=True),
            sa.Column("display_norm", sa.Text, nullable=True),
        ],
        ["code", "system"],
    )
    _create(
        "idx_reference",
        [
            sa.Column("target_type", sa.String(64), nullable=True),
            sa.Column("target_id", C_TEXT, nullable=True),
            sa.Column("url", C_TEXT, nullable=True),
        ],
        ["target_id", "target_type"],
    )
    _create(
        "idx_date",
        [sa.Column("low", UTCDateTime(), nullable=False), sa.Column("high", UTCDateTime(), nullable=False)],
        ["low", "high"],
    )
    _create("idx_number", [sa.Column("value", sa.Numeric, nullable=False)], ["value"])
    _create(
        "idx_quantity",
        [
            sa.Column("value", sa.Numeric, nullable=False),
            sa.Column("system", C_TEXT, nullable=True),
            sa.Column("code", C_TEXT, nullable=True),
        ],
        ["value"],
    )
    _create("idx_uri", [sa.Column("value", C_TEXT, nullable=False)], ["value"])


def downgrade() -> None:
    for name in ("idx_uri", "idx_quantity", "idx_number", "idx_date", "idx_reference", "idx_token", "idx_string"):
        op.drop_table(name)
    op.create_table(
        "search_token",
        sa.Column("resource_type", sa.String(64), nullable=False),
        sa.Column("resource_id", sa.String(64), nullable=False),
        sa.Column("param", sa.String(64), nullable=False),
        sa.Column("system", sa.String(255), nullable=True),
        sa.Column("code", sa.String(255), nullable=True),
    )
    op.create_index("ix_token_lookup", "search_token", ["resource_type", "param", "code", "system"])
    op.create_index("ix_token_resource", "search_token", ["resource_type", "resource_id"])
