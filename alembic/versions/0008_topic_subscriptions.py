"""Topic-based Subscriptions: handshake and heartbeat state per subscription, websocket binding tokens
(``app.subscriptions.tables``).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa

from alembic import op
from app.storage.tables import UTCDateTime

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "subscription_state", sa.Column("handshake_due", sa.Boolean, nullable=False, server_default=sa.false())
    )
    op.add_column("subscription_state", sa.Column("heartbeat_seconds", sa.Integer, nullable=True))
    op.add_column("subscription_state", sa.Column("heartbeat_at", UTCDateTime(), nullable=True))
    op.create_table(
        "subscription_tokens",
        sa.Column("token_hash", sa.String(64), primary_key=True),
        sa.Column("subscription_id", sa.String(64), nullable=False),
        sa.Column("expires", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_subscription_tokens_expires", "subscription_tokens", ["expires"])


def downgrade() -> None:
    op.drop_index("ix_subscription_tokens_expires", "subscription_tokens")
    op.drop_table("subscription_tokens")
    op.drop_column("subscription_state", "heartbeat_at")
    op.drop_column("subscription_state", "heartbeat_seconds")
    op.drop_column("subscription_state", "handshake_due")
