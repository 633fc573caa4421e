"""Composite-parameter combinations and reference identifiers in the index tables.

Adds ``combo`` to every index table (rows of one composite combination share
it) and ``identifier_system``/``identifier_value`` to ``idx_reference`` for
the ``:identifier`` modifier. Resources stored before this revision gain
these rows when they are next written or through ``$reindex``.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

C_TEXT = sa.Text().with_variant(sa.Text(collation="C"), "postgresql")
TABLES = ("idx_string", "idx_token", "idx_reference", "idx_date", "idx_number", "idx_quantity", "idx_uri")


def upgrade() -> None:
    for name in TABLES:
        op.add_column(name, sa.Column("combo", sa.Integer, nullable=True))
    op.add_column("idx_reference", sa.Column("identifier_system", C_TEXT, nullable=True))
    op.add_column("idx_reference", sa.Column("identifier_value", C_TEXT, nullable=True))
    op.create_index(  # partial: only references that carry an identifier (few) pay for this index
        "ix_idx_reference_identifier",
        "idx_reference",
        ["param_hash", "identifier_value", "identifier_system"],
        postgresql_where=sa.text("identifier_value IS NOT NULL"),
        sqlite_where=sa.text("identifier_value IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_idx_reference_identifier", "idx_reference")
    with op.batch_alter_table("idx_reference") as batch:
        batch.drop_column("identifier_value")
        batch.drop_column("identifier_system")
    for name in TABLES:
        with op.batch_alter_table(name) as batch:
            batch.drop_column("combo")
