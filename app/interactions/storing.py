"""From an interaction's body to the write gate (``app.storage.writes``) and back to its HTTP result.

Every create, update, delete and patch stores its version here, so the
stamping of ``id``/``meta`` and the mapping of a stored ``Change`` to a
``WriteResult`` exist once.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from functools import partial
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from app.interactions.context import FhirContext, WriteResult
from app.interactions.stamping import stamp
from app.storage.gate import ReadGate
from app.storage.index_tables import IndexRows
from app.storage.writes import ABSENT, ANY, Change, Expect, NewVersion

__all__ = ["ABSENT", "ANY", "Expect", "new_version", "result_of", "store", "store_body"]


def new_version(
    ctx: FhirContext, resource_type: str, resource_id: str, body: dict[str, Any] | None, rows: IndexRows, method: str
) -> NewVersion:
    """The version a write stores (``body`` None: a deletion), rendered with the server's ``meta``."""
    render: Callable[[int, datetime], bytes] | None = None if body is None else partial(stamp, body, resource_id)
    tables = ctx.extractor.tables_for(resource_type)
    return NewVersion(resource_type, resource_id, render, rows, tables, method, ctx.row_keys(resource_type, rows))


def result_of(change: Change) -> WriteResult:
    """201 when the write brought the resource into existence (new, or after a deletion), else 200."""
    return WriteResult(status=201 if change.created else 200, stored=change.stored, created=change.created)


async def store(
    ctx: FhirContext,
    conn: AsyncConnection | None,
    resource_type: str,
    resource_id: str,
    body: dict[str, Any] | None,
    rows: IndexRows,
    expect: Expect,
    method: str,
    gate: ReadGate,
) -> WriteResult | None:
    """Write through the gate, in ``conn``'s transaction or (None) as a write of its own; None when a
    deletion found nothing live. ``gate`` is what the caller may read and do (``ResourceWriter.write``)."""
    new = new_version(ctx, resource_type, resource_id, body, rows, method)
    change = await ctx.writer.write(conn, new, expect, gate)
    return None if change is None else result_of(change)


async def store_body(
    ctx: FhirContext,
    conn: AsyncConnection | None,
    resource_type: str,
    resource_id: str,
    body: dict[str, Any],
    rows: IndexRows,
    expect: Expect,
    method: str,
    gate: ReadGate,
) -> WriteResult:
    """``store`` of a body (not a deletion), which always stores a version or raises."""
    result = await store(ctx, conn, resource_type, resource_id, body, rows, expect, method, gate)
    assert result is not None  # only a deletion stores nothing
    return result
