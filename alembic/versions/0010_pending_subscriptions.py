"""An index of the subscriptions with something to send (``app.subscriptions.tables.PENDING``), so a
dispatcher's round reads those rather than every subscription's delivery state.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03
"""

from __future__ import annotations

from alembic import op
from app.subscriptions.tables import PENDING

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_subscription_state_pending",
        "subscription_state",
        ["subscription_id"],
        postgresql_where=PENDING,
        sqlite_where=PENDING,
    )


def downgrade() -> None:
    op.drop_index("ix_subscription_state_pending", "subscription_state")
