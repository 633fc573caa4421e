"""``$reindex``: rebuild the search index of stored resources from their current versions.

Needed after a SearchParameter is added (resources written before it have
no rows for it) or after an upgrade that indexes more. The search values the
resource rows carry (``app.storage.row_keys``) are rewritten with the rows. Resources are
processed in id order, a batch per transaction; each batch's rows are
locked while it is re-extracted (``FOR UPDATE`` on PostgreSQL; SQLite
transactions here are exclusive), so a concurrent update either lands
before the batch reads the body or waits and writes its own rows after.
The type and system levels run as background jobs (``app.interactions.jobs``)
that call ``reindex_after`` batch by batch; the instance level and the
whole-type helpers here run in the caller.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Integer, bindparam, func, select
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql import Select

from app import fhirjson
from app.errors import NotFound
from app.interactions.context import FhirContext
from app.interactions.request_context import RequestContext
from app.storage.index_tables import IndexRows, merge_rows
from app.storage.index_writer import delete_index_rows_many, insert_index_rows
from app.storage.repository import set_row_keys
from app.storage.tables import resources

BATCH = 500
_R = resources.c
_BATCH_AFTER = (
    select(_R.id, _R.body)
    .where(_R.resource_type == bindparam("rt"), _R.deleted.is_(False), _R.id > bindparam("after"))
    .order_by(_R.id)
    .limit(bindparam("limit", type_=Integer))
    .with_for_update()
)
_ONE = (
    select(_R.id, _R.body)
    .where(_R.resource_type == bindparam("rt"), _R.deleted.is_(False), _R.id == bindparam("rid"))
    .with_for_update()
)
_COUNT = select(func.count()).select_from(resources).where(_R.resource_type == bindparam("rt"), _R.deleted.is_(False))


async def _reindex_rows(
    ctx: FhirContext, conn: AsyncConnection, resource_type: str, statement: Select[Any], params: dict[str, Any]
) -> list[str]:
    """Re-extract the rows ``statement`` locks, in the caller's transaction; the ids done. A batch
    rewrites thousands of index rows: on inline SQLite its statements and commit run in a worker thread
    (``Database.run_off_loop``), where the disk's stalls (a commit or a read taking a few hundred
    milliseconds on a busy disk) do not hold up every other request."""
    await ctx.db.run_off_loop(conn)
    rows = list(await conn.execute(statement, params))
    if not rows:
        return []
    ids = [row[0] for row in rows]
    # in a worker thread: one batch may hold a resource of megabytes, whose parsing and extraction
    # would otherwise hold every other request for a second or more
    index_rows = await asyncio.to_thread(_extracted, ctx, resource_type, [(row[0], row[1]) for row in rows])
    await delete_index_rows_many(conn, resource_type, ids, ctx.extractor.tables_for(resource_type))
    await insert_index_rows(conn, merge_rows(index_rows))
    await set_row_keys(
        conn, resource_type, {rid: ctx.row_keys(resource_type, r) for rid, r in zip(ids, index_rows, strict=True)}
    )
    return ids


def _extracted(ctx: FhirContext, resource_type: str, rows: Sequence[tuple[str, bytes]]) -> list[IndexRows]:
    """The index rows of each stored (id, body)."""
    return [ctx.index_rows(resource_type, rid, fhirjson.loads(body)) for rid, body in rows]


async def _reindex_batch(
    ctx: FhirContext, resource_type: str, statement: Select[Any], params: dict[str, Any]
) -> list[str]:
    """Re-extract one batch inside one transaction; the ids done."""
    async with ctx.db.write() as conn:
        return await _reindex_rows(ctx, conn, resource_type, statement, params)


async def reindex_after(
    ctx: FhirContext, conn: AsyncConnection, resource_type: str, after: str, limit: int
) -> list[str]:
    """The next ``limit`` live resources of the type with ids above ``after``, reindexed in the
    caller's transaction (so a job records its cursor in the same commit); the ids done."""
    params = {"rt": resource_type, "after": after, "limit": limit}
    return await _reindex_rows(ctx, conn, resource_type, _BATCH_AFTER, params)


async def count_live(ctx: FhirContext, resource_type: str) -> int:
    """How many live resources of the type there are now (a job's progress denominator)."""
    async with ctx.db.read() as conn:
        return int((await conn.execute(_COUNT, {"rt": resource_type})).scalar_one())


async def reindex_type(ctx: FhirContext, resource_type: str) -> int:
    """Every live resource of one type; the number reindexed."""
    ctx.require_type(resource_type)
    done, after = 0, ""
    while True:
        params = {"rt": resource_type, "after": after, "limit": BATCH}
        ids = await _reindex_batch(ctx, resource_type, _BATCH_AFTER, params)
        if not ids:
            return done
        done += len(ids)
        after = ids[-1]


async def reindex_instance(ctx: FhirContext, rc: RequestContext, resource_type: str, resource_id: str) -> int:
    rc.caller.require_system(maintains=resource_type)
    ctx.require_known(resource_type, resource_id)
    if not await _reindex_batch(ctx, resource_type, _ONE, {"rt": resource_type, "rid": resource_id}):
        raise NotFound(f"{resource_type}/{resource_id} is not known")
    return 1


def counts_parameters(counts: Mapping[str, int]) -> dict[str, Any]:
    """The answer of ``$reindex``: a Parameters resource with the total and, per type, the number reindexed."""
    return {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "count", "valueInteger": sum(counts.values())},
            *(
                {"name": "type", "part": [{"name": "type", "valueCode": t}, {"name": "count", "valueInteger": n}]}
                for t, n in counts.items()
                if n
            ),
        ],
    }
