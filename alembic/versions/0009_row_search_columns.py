"""The subject and status of each current resource as columns of its row, under one B-tree
(``app.storage.row_keys``, ``app.search.row_columns``), filled for the resources already stored from
their index rows.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa

from alembic import op
from app.storage.tables import CText

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("resources", sa.Column("subject_ref", CText, nullable=True))
    op.add_column("resources", sa.Column("status_code", CText, nullable=True))
    op.create_index("ix_resources_subject_status", "resources", ["resource_type", "subject_ref", "status_code", "id"])
    connection = op.get_bind()
    if connection.execute(sa.text("SELECT 1 FROM resources WHERE deleted = false LIMIT 1")).first() is None:
        return  # a new database: nothing to fill
    _fill_from_index_rows(connection)


def _fill_from_index_rows(connection: sa.Connection) -> None:
    """Each type's columns from the index rows of the parameters that fill them."""
    # imported here: only a database that holds resources needs the registry
    from app.main import served_resource_types
    from app.search.registry import load_registry

    registry = load_registry(served_resource_types())
    for resource_type in sorted(registry.by_type):
        rule = registry.row_key_rule(resource_type)
        if rule.subject_hash is not None:
            connection.execute(
                sa.text(
                    "UPDATE resources SET subject_ref = (SELECT min(x.target_type || '/' || x.target_id)"
                    " FROM idx_reference x WHERE x.resource_type = resources.resource_type"
                    " AND x.resource_id = resources.id AND x.param_hash = :hash AND x.combo IS NULL"
                    " AND x.target_type IS NOT NULL AND x.target_id IS NOT NULL)"
                    " WHERE resource_type = :type AND deleted = false"
                ),
                {"hash": rule.subject_hash, "type": resource_type},
            )
        if rule.status_hash is not None:
            connection.execute(
                sa.text(
                    "UPDATE resources SET status_code = (SELECT min(t.code) FROM idx_token t"
                    " WHERE t.resource_type = resources.resource_type AND t.resource_id = resources.id"
                    " AND t.param_hash = :hash AND t.combo IS NULL)"
                    " WHERE resource_type = :type AND deleted = false"
                ),
                {"hash": rule.status_hash, "type": resource_type},
            )


def downgrade() -> None:
    op.drop_index("ix_resources_subject_status", "resources")
    op.drop_column("resources", "status_code")
    op.drop_column("resources", "subject_ref")
