"""Extended statistics on PostgreSQL for the index tables' (parameter, value) pairs.

PostgreSQL estimates ``param_hash = h AND code = 'requested'`` as if the two
were independent; on real data they are not (the code exists under one
parameter only), so it underestimated such clauses tenfold and picked plans
that rescanned them per row. MCV lists and functional dependencies over the
pairs fix the estimates (measured in bench/search_scale.py). SQLite has no
such statistics; nothing to do there.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

# The hash also determines resource_type (and, for most reference parameters, target_type): without
# saying so, PostgreSQL multiplied those selectivities in as if independent, underestimating
# `Patient?_has:Task:patient:status=requested` 15-fold and choosing hash joins over every requested
# Task (811 ms) instead of walking patients in id order with index probes (49 ms) at 1M resources.
STATISTICS = {
    "st_idx_token_param_code": ("idx_token", "param_hash, resource_type, code"),
    "st_idx_reference_param_target": ("idx_reference", "param_hash, resource_type, target_type, target_id"),
    "st_idx_string_param_value": ("idx_string", "param_hash, resource_type, value_norm"),
    "st_idx_uri_param_value": ("idx_uri", "param_hash, resource_type, value"),
    "st_idx_date_param": ("idx_date", "param_hash, resource_type"),
    "st_idx_number_param": ("idx_number", "param_hash, resource_type"),
    "st_idx_quantity_param": ("idx_quantity", "param_hash, resource_type, code"),
}


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for name, (table, columns) in STATISTICS.items():
        op.execute(f"CREATE STATISTICS IF NOT EXISTS {name} (mcv, dependencies) ON {columns} FROM {table}")
        op.execute(f"ANALYZE {table}")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for name in STATISTICS:
        op.execute(f"DROP STATISTICS IF EXISTS {name}")
