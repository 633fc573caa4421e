"""Subscriptions: delivery state per subscription, the transactional outbox of events, attempts
(``app.subscriptions.tables``).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa

from alembic import op
from app.storage.tables import UTCDateTime

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "subscription_state",
        sa.Column("subscription_id", sa.String(64), primary_key=True),
        sa.Column("active", sa.Boolean, nullable=False),
        sa.Column("events_assigned", sa.BigInteger, nullable=False),
        sa.Column("delivered_through", sa.BigInteger, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("retry_at", UTCDateTime(), nullable=True),
        sa.Column("failing_since", UTCDateTime(), nullable=True),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("lease_owner", sa.String(64), nullable=True),
        sa.Column("lease_until", UTCDateTime(), nullable=True),
        sa.Column("owner", sa.Text, nullable=True),
    )
    op.create_table(
        "subscription_events",
        sa.Column("subscription_id", sa.String(64), primary_key=True),
        sa.Column("event_number", sa.BigInteger, primary_key=True),
        sa.Column("resource_type", sa.String(64), nullable=False),
        sa.Column("resource_id", sa.String(64), nullable=False),
        sa.Column("version_id", sa.Integer, nullable=False),
        sa.Column("deleted", sa.Boolean, nullable=False),
        sa.Column("occurred", UTCDateTime(), nullable=False),
        sa.Column("delivered", UTCDateTime(), nullable=True),
    )
    op.create_table(
        "subscription_attempts",
        sa.Column(
            "attempt_id",
            sa.BigInteger().with_variant(sa.Integer, "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("subscription_id", sa.String(64), nullable=False),
        sa.Column("event_number", sa.BigInteger, nullable=False),
        sa.Column("attempted", UTCDateTime(), nullable=False),
        sa.Column("delivered", sa.Boolean, nullable=False),
        sa.Column("detail", sa.Text, nullable=False),
        sa.Column("milliseconds", sa.Integer, nullable=False),
    )
    op.create_index("ix_subscription_attempts_subscription", "subscription_attempts", ["subscription_id", "attempted"])


def downgrade() -> None:
    op.drop_index("ix_subscription_attempts_subscription", "subscription_attempts")
    op.drop_table("subscription_attempts")
    op.drop_table("subscription_events")
    op.drop_table("subscription_state")
