"""Typed search-index tables, one per parameter type (hl7.org/fhir/R4/search.html#ptypes).

Every row names the resource (``resource_type``, ``resource_id``) and the
parameter by ``param_hash``, a 64-bit hash of ``Type.code``: a query on one
parameter is then one index range scan on ``(param_hash, value...)``, and
the hash keeps rows small. Strings are compared in C collation on
PostgreSQL so prefix matches are plain range scans on either backend.
Values longer than ``MAX_INDEXED_CHARS`` are cut to fit a B-tree entry.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Index, Integer, Numeric, String, Table, Text, text

from app.storage.tables import UTCDateTime, metadata

MAX_INDEXED_CHARS = 512
CText = Text().with_variant(Text(collation="C"), "postgresql")


def _index_table(name: str, *columns: Column | Index, value_index: tuple[str, ...]) -> Table:
    return Table(
        name,
        metadata,
        Column("resource_type", String(64), nullable=False),
        Column("resource_id", String(64), nullable=False),
        Column("param_hash", BigInteger, nullable=False),
        *columns,
        # rows of one composite-parameter combination share this number (NULL otherwise)
        Column("combo", Integer, nullable=True),
        Index(f"ix_{name}_value", "param_hash", *value_index),
        Index(f"ix_{name}_resource", "resource_type", "resource_id"),
    )


idx_string = _index_table(
    "idx_string",
    Column("value_norm", CText, nullable=False),
    Column("value_exact", Text, nullable=False),
    value_index=("value_norm",),
)
idx_token = _index_table(
    "idx_token",
    Column("system", CText, nullable=True),
    Column("code", CText, nullable=True),
    Column("display_norm", Text, nullable=True),
    value_index=("code", "system"),
)
idx_reference = _index_table(
    "idx_reference",
    Column("target_type", String(64), nullable=True),
    Column("target_id", CText, nullable=True),
    Column("url", CText, nullable=True),
    Column("identifier_system", CText, nullable=True),
    Column("identifier_value", CText, nullable=True),
    # partial: only references that carry an identifier (few) pay for this index
    Index(
        "ix_idx_reference_identifier",
        "param_hash",
        "identifier_value",
        "identifier_system",
        postgresql_where=text("identifier_value IS NOT NULL"),
        sqlite_where=text("identifier_value IS NOT NULL"),
    ),
    value_index=("target_id", "target_type"),
)
idx_date = _index_table(
    "idx_date",
    Column("low", UTCDateTime(), nullable=False),
    Column("high", UTCDateTime(), nullable=False),
    value_index=("low", "high"),
)
idx_number = _index_table(
    "idx_number",
    Column("value", Numeric, nullable=False),
    value_index=("value",),
)
idx_quantity = _index_table(
    "idx_quantity",
    Column("value", Numeric, nullable=False),
    Column("system", CText, nullable=True),
    Column("code", CText, nullable=True),
    value_index=("value",),
)
idx_uri = _index_table(
    "idx_uri",
    Column("value", CText, nullable=False),
    value_index=("value",),
)

INDEX_TABLES: dict[str, Table] = {
    "string": idx_string,
    "token": idx_token,
    "reference": idx_reference,
    "date": idx_date,
    "number": idx_number,
    "quantity": idx_quantity,
    "uri": idx_uri,
}
