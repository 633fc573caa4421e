"""Background jobs: state, progress, resume cursor and lease of asynchronous requests.

``$reindex`` at type and system level runs as a job (hl7.org/fhir/R4/async.html);
any server process may answer its polling location and resume it when its
owner stops, so the state is a table (``app/storage/jobs.py``).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa

from alembic import op
from app.storage.tables import UTCDateTime

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("parameters", sa.Text, nullable=False),
        sa.Column("progress", sa.Text, nullable=True),
        sa.Column("cursor_type", sa.String(64), nullable=True),
        sa.Column("cursor_id", sa.String(64), nullable=True),
        sa.Column("result", sa.Text, nullable=True),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("created", UTCDateTime(), nullable=False),
        sa.Column("updated", UTCDateTime(), nullable=False),
        sa.Column("heartbeat", UTCDateTime(), nullable=True),
        sa.Column("owner", sa.String(64), nullable=True),
    )
    op.create_index("ix_jobs_status", "jobs", ["status"])


def downgrade() -> None:
    op.drop_table("jobs")
