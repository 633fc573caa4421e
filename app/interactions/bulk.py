"""Creating many resources in one transaction with batched statements.

A create costs a handful of statements (current row, history row, one
insert per index table); most of that is per-statement overhead in the
driver and SQLAlchemy rather than database work. Creating N resources
together costs the same handful of statements with N rows each. Used by
bulk loading and by Bundle processing for entries that create resources.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from app.interactions.context import FhirContext, utc_now
from app.interactions.create import check_body_type
from app.interactions.stamping import stamp
from app.storage.gate import ReadGate
from app.storage.index_tables import IndexRows
from app.storage.repository import StoredVersion
from app.storage.row_keys import RowKeys


@dataclass(frozen=True, slots=True)
class PreparedCreate:
    """A new resource ready to store: its first version, its index rows and its row keys."""

    version: StoredVersion
    rows: IndexRows
    keys: RowKeys


def prepare_create(
    ctx: FhirContext,
    resource_type: str,
    body: dict[str, Any],
    now: datetime | None = None,
    resource_id: str | None = None,
    validate: bool = True,
) -> PreparedCreate:
    """Check, id, stamp and index a body before any transaction opens (CPU only).

    ``validate=False`` is for trusted generated data whose shape is known
    valid; everything stored is still indexed by the same code as a create.
    """
    ctx.require_type(resource_type)
    check_body_type(resource_type, body)
    if validate:
        ctx.validator.validate(resource_type, body)
    resource_id = resource_id or str(uuid.uuid4())
    now = now or utc_now()
    version = StoredVersion(resource_type, resource_id, 1, now, False, stamp(body, resource_id, 1, now), "POST")
    rows = ctx.index_rows(resource_type, resource_id, body)
    return PreparedCreate(version, rows, ctx.row_keys(resource_type, rows))


async def store_creates(
    ctx: FhirContext, conn: AsyncConnection, prepared: Sequence[PreparedCreate], gate: ReadGate
) -> None:
    """Store prepared creates in the caller's transaction through the write gate
    (``ResourceWriter.create_many``, which checks each against ``gate``): two statements plus one
    per index table."""
    await ctx.writer.create_many(conn, [(p.version, p.rows, p.keys) for p in prepared], gate)
