"""Typed search-index tables, one per parameter type (hl7.org/fhir/R4/search.html#ptypes).

Every row names the resource (``resource_type``, ``resource_id``) and the
parameter by ``param_hash``, a 64-bit hash of ``Type.code``: a query on one
parameter is then one index range scan on ``(param_hash, value...)``, and
the hash keeps rows small. Strings are compared in C collation on
PostgreSQL so prefix matches are plain range scans on either backend.

A B-tree entry must fit a third of a page (2,704 bytes on PostgreSQL), and an
identifier system or value can be any length. Values matched for equality
(codes, systems, ids, urls, identifiers) whose UTF-8 form is longer than
``MAX_INDEXED_BYTES`` are stored as a prefix plus a hash of the whole value
(``indexed_text``), and a search value is turned into the same form, so long
values stay exactly searchable. Strings searched by prefix are cut to
``MAX_INDEXED_CHARS`` instead (the search value is cut the same way).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any

from sqlalchemy import BigInteger, Column, ColumnElement, Index, Integer, Numeric, String, Table, Text, column
from sqlalchemy.sql.base import ReadOnlyColumnCollection

from app.storage.tables import CText, UTCDateTime, metadata

# Rows for the index tables, per table name, as one resource's extraction produces them.
IndexRows = dict[str, list[dict[str, Any]]]

# The columns of an index table or of the resources table (or an alias of one), as conditions use them.
Columns = ReadOnlyColumnCollection[str, ColumnElement[Any]]

MAX_INDEXED_CHARS = 512
MAX_INDEXED_BYTES = 512
_KEPT_PREFIX_BYTES = 400
MAX_TYPE_CHARS = 64  # resource_type and target_type columns


def indexed_text(value: str) -> str:
    """``value`` as stored in an equality-matched index column: itself when it fits, otherwise its
    first 400 bytes, ``#`` and a 128-bit hash of the whole value."""
    if len(value) <= MAX_INDEXED_BYTES // 4:  # cannot pass the limit, whatever the characters
        return value
    encoded = value.encode()
    if len(encoded) <= MAX_INDEXED_BYTES:
        return value
    prefix = encoded[:_KEPT_PREFIX_BYTES].decode(errors="ignore")
    return f"{prefix}#{hashlib.blake2b(encoded, digest_size=16).hexdigest()}"


def _index_table(name: str, *columns: Column[Any] | Index, value_index: tuple[str, ...]) -> Table:
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
        postgresql_where=column("identifier_value").is_not(None),
        sqlite_where=column("identifier_value").is_not(None),
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


def merge_rows(many: Iterable[IndexRows]) -> IndexRows:
    """The rows of several resources per table, for one batched insert per table."""
    merged: IndexRows = {}
    for rows in many:
        for table, table_rows in rows.items():
            merged.setdefault(table, []).extend(table_rows)
    return merged
