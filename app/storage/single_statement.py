"""A resource version, its history row and its index rows in one PostgreSQL statement.

A create through SQLAlchemy costs BEGIN, two inserts, one insert per index
table and COMMIT: about seven round trips and, measured, 3.3 ms of CPU in
SQLAlchemy, the asyncpg adapter and transaction handling against 0.5 ms for
validation and indexing (bench/profile_create.py). One statement of
data-modifying CTEs does the same work: it is atomic on its own (no
explicit transaction), and inserts the history and index rows only when the
current row was inserted (no id clash). An update is the same with the
current row moved by ``UPDATE ... WHERE version_id = expected`` and the old
index rows deleted: every CTE sees the snapshot from before the statement,
so the deletes remove only the old rows.

The statements are SQLAlchemy Core constructs, compiled once per shape
(which index tables are written) for the asyncpg dialect and run on the
asyncpg connection under SQLAlchemy's, as a prepared statement asyncpg
caches: SQLAlchemy's own execution path would add its per-statement cost
and the transaction round trips this module exists to avoid. Index rows
travel as one array per column, spread back into rows by ``unnest``.
Only ``app.storage.writes`` calls this module (the write gate decides when).

A write hook that can decide in memory what else the write must store
(Subscriptions' outbox: the event rows of the subscriptions it matches)
adds its own data-modifying CTEs to the statement as a ``StatementPart``,
so such a write keeps the single round trip too.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Delete,
    Insert,
    Select,
    String,
    Text,
    bindparam,
    delete,
    exists,
    false,
    func,
    insert,
    literal,
    not_,
    or_,
    select,
    true,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.selectable import CTE
from sqlalchemy.types import TypeEngine

from app.storage.asyncpg_sql import Compiled, compile_for_asyncpg
from app.storage.driver import SPREAD_AT_EXECUTION
from app.storage.index_tables import INDEX_TABLES, IndexRows
from app.storage.repository import AlreadyExists, StoredVersion
from app.storage.row_keys import RowKeys
from app.storage.tables import resource_history, resources

_r = resources.c
_h = resource_history.c
_HISTORY_COLUMNS = ["resource_type", "id", "version_id", "last_updated", "deleted", "method", "body"]


@dataclass(frozen=True, slots=True)
class StatementPart:
    """More work for the one statement of a write, decided by a write hook before it runs.

    ``build`` gets the CTE of the current row (it returns the new version
    number, one row exactly when the write happened: condition each CTE on
    it) and returns the CTEs to add. The statement is compiled once per
    shape: ``shape`` must be equal exactly when ``build`` builds the same SQL
    with the same values bound inside it. Values that change from write to
    write go in ``values``, under bind names of the part's own (distinct from
    the write's ``rt``, ``rid``, ``vid``, ``updated``, ``payload``,
    ``method``). ``committed`` runs once the statement succeeded (it commits
    by itself), with the number of rows the part's first CTE returned: what
    the part did (the outbox wakes its dispatcher only when it numbered an
    event), so that CTE must return a row per thing done; a part with
    nothing to add returns no CTE (its count is 0).

    ``veto`` builds a condition on stored rows under which the write must
    not be stored by this statement: the statement then writes nothing and
    the writer raises ``NotOneStatement`` (the write takes a transaction,
    where the hook does what the condition stands for). It is for what a
    hook rarely needs and could only do in the statement at a cost on every
    write, such as numbering events on a condition for each of many
    subscriptions (``app.subscriptions.settled``): a condition is one
    filter of the write's row, where each conditional data-modifying CTE
    is a node of the plan that starts at every execution.
    """

    shape: Hashable
    build: Callable[[CTE], Sequence[CTE]]
    values: Mapping[str, object]
    committed: Callable[[int], None] | None = None
    veto: Callable[[], ColumnElement[bool]] | None = None


class NotOneStatement(Exception):
    """Nothing was written, and the write takes a transaction: the parts given cannot run as SQL
    compiled once (they hold a list SQLAlchemy spreads into parameters only when it executes a
    statement itself, an ``IN`` of several values), or a part's veto held (``StatementPart.veto``)."""


_COMPILED: dict[Hashable, Compiled | None] = {}
_MOST_SHAPES = 512  # then the cache starts again: shapes come from index tables and hooks' parts


def _compiled(key: Hashable, make: Callable[[], Select[Any]]) -> Compiled:
    """The statement of one shape, compiled the first time it is needed (raises ``NotOneStatement``)."""
    if key in _COMPILED:
        found = _COMPILED[key]
    else:
        if len(_COMPILED) >= _MOST_SHAPES:
            _COMPILED.clear()
        found = compile_for_asyncpg(make())
        if SPREAD_AT_EXECUTION in found.sql:
            found = None
        _COMPILED[key] = found
    if found is None:
        raise NotOneStatement("a statement part holds a list spread only at execution")
    return found


@cache  # on every write's path
def index_columns(name: str) -> tuple[str, ...]:
    """The columns of an index table after (resource_type, resource_id), in table order."""
    return tuple(c.name for c in INDEX_TABLES[name].c if c.name not in ("resource_type", "resource_id"))


def _array_of(column_type: TypeEngine[object]) -> ARRAY[object]:
    """The array type of a column's values; strings as ``text[]`` (the column's collation applies on insert)."""
    return ARRAY(Text()) if isinstance(column_type, String) else ARRAY(column_type)


def _index_inserts(tables: Sequence[str], cur: CTE) -> list[CTE]:
    """One CTE per table inserting rows passed as one array per column, only if ``cur`` has a row."""
    parts = []
    for position, name in enumerate(tables):
        table = INDEX_TABLES[name]
        columns = index_columns(name)
        arrays = [bindparam(f"{name}.{column}", type_=_array_of(table.c[column].type)) for column in columns]
        unnested = func.unnest(*arrays).table_valued(*columns).render_derived(name="u")
        rows = select(bindparam("rt"), bindparam("rid"), *(unnested.c[c] for c in columns)).select_from(
            unnested.join(cur, true())
        )
        statement: Insert = insert(table).from_select(["resource_type", "resource_id", *columns], rows)
        parts.append(statement.cte(f"i{position}"))
    return parts


def _history(cur: CTE, deleted: ColumnElement[bool]) -> CTE:
    names = ("rt", "rid", "vid", "updated", "deleted", "method", "payload")
    columns = [deleted if name == "deleted" else bindparam(name) for name in names]
    values = select(*columns).select_from(cur)
    return insert(resource_history).from_select(_HISTORY_COLUMNS, values).cte("hist")


def _counts(cur: CTE, parts: Sequence[StatementPart], *written: CTE) -> Select[Any]:
    """The statement's result: the rows ``cur`` returned (1 when the write happened, else 0), then
    for each part the rows its first CTE returned, with every CTE of the write (``written``) and of the
    parts attached."""
    added = [list(part.build(cur)) for part in parts]
    counts: list[ColumnElement[Any]] = [_count(cur), *(_count(ctes[0]) if ctes else literal(0) for ctes in added)]
    return select(*counts).add_cte(*written, *(cte for ctes in added for cte in ctes))


def _count(cte: CTE) -> ColumnElement[int]:
    return select(func.count()).select_from(cte).scalar_subquery()


def _unvetoed(parts: Sequence[StatementPart]) -> list[ColumnElement[bool]]:
    """The condition on which the write is stored: that none of the parts' vetoes holds
    (``StatementPart.veto``); no condition when no part has one."""
    conditions = [part.veto() for part in parts if part.veto is not None]
    return [not_(or_(*conditions))] if conditions else []


def _vetoed(parts: Sequence[StatementPart]) -> NotOneStatement | None:
    """What a write that stored nothing raises when a part had a veto: the veto may be why (an id taken
    or a lost race is then found again by the transaction the write takes instead)."""
    if any(part.veto is not None for part in parts):
        return NotOneStatement("a write hook's condition held: the write takes a transaction")
    return None


def create_statement(tables: tuple[str, ...], parts: Sequence[StatementPart] = ()) -> Compiled:
    """A create writing index rows to ``tables`` (and what ``parts`` add): its first column is 1, or 0
    when the id was taken (nothing written); then one count per part (``_counts``)."""
    key = ("create", tables, tuple(part.shape for part in parts))
    return _compiled(key, lambda: _create(tables, parts))


def _create(tables: tuple[str, ...], parts: Sequence[StatementPart]) -> Select[Any]:
    row = {
        "resource_type": bindparam("rt", type_=_r.resource_type.type),
        "id": bindparam("rid", type_=_r.id.type),
        "version_id": bindparam("vid", type_=_r.version_id.type),
        "last_updated": bindparam("updated", type_=_r.last_updated.type),
        "deleted": false(),
        "body": bindparam("payload", type_=_r.body.type),
        "subject_ref": bindparam("subject_ref", type_=_r.subject_ref.type),
        "status_code": bindparam("status_code", type_=_r.status_code.type),
    }
    unvetoed = _unvetoed(parts)
    inserted = postgresql_insert(resources)
    if unvetoed:  # the row only when no veto holds
        inserted = inserted.from_select(list(row), select(*row.values()).where(*unvetoed))
    else:
        inserted = inserted.values(row)
    cur = inserted.on_conflict_do_nothing(index_elements=["resource_type", "id"]).returning(_r.version_id).cte("cur")
    return _counts(cur, parts, _history(cur, false()), *_index_inserts(tables, cur))


def replace_statement(
    deletes: tuple[str, ...], inserts: tuple[str, ...], parts: Sequence[StatementPart] = ()
) -> Compiled:
    """Moving the current row from version ``expected`` to ``vid`` (a NULL payload is a deletion),
    its old index rows in ``deletes`` removed and new rows in ``inserts`` added (and what ``parts``
    add): its first column is 1, or 0 when another writer moved the row first (nothing written); then
    one count per part (``_counts``)."""
    key = ("replace", deletes, inserts, tuple(part.shape for part in parts))
    return _compiled(key, lambda: _replace(deletes, inserts, parts))


def _replace(deletes: tuple[str, ...], inserts: tuple[str, ...], parts: Sequence[StatementPart]) -> Select[Any]:
    payload = bindparam("payload", type_=resources.c.body.type)
    cur = (
        update(resources)
        .where(
            _r.resource_type == bindparam("rt"),
            _r.id == bindparam("rid"),
            _r.version_id == bindparam("expected"),
            *_unvetoed(parts),
        )
        .values(
            version_id=bindparam("vid"),
            last_updated=bindparam("updated"),
            deleted=payload.is_(None),
            body=payload,
            subject_ref=bindparam("subject_ref", type_=_r.subject_ref.type),
            status_code=bindparam("status_code", type_=_r.status_code.type),
        )
        .returning(_r.version_id)
        .cte("cur")
    )
    removals = []
    for position, name in enumerate(deletes):
        table = INDEX_TABLES[name]
        removal: Delete = delete(table).where(
            table.c.resource_type == bindparam("rt"),
            table.c.resource_id == bindparam("rid"),
            exists(select(cur.c.version_id)),
        )
        removals.append(removal.cte(f"d{position}"))
    return _counts(cur, parts, _history(cur, payload.is_(None)), *removals, *_index_inserts(inserts, cur))


def _values(
    version: StoredVersion,
    rows: IndexRows,
    tables: Iterable[str],
    parts: Sequence[StatementPart],
    keys: RowKeys,
) -> dict[str, object]:
    values: dict[str, object] = {
        "rt": version.resource_type,
        "rid": version.id,
        "vid": version.version_id,
        "updated": version.last_updated,
        "payload": version.body,
        "method": version.method,
        **keys.columns(),
    }
    for name in tables:
        table_rows = rows[name]
        for column in index_columns(name):
            values[f"{name}.{column}"] = [row[column] for row in table_rows]
    for part in parts:
        values.update(part.values)
    return values


def _written_tables(rows: IndexRows) -> tuple[str, ...]:
    return tuple(sorted(name for name, table_rows in rows.items() if table_rows))


async def _fetch_counts(conn: AsyncConnection, statement: Compiled, values: Mapping[str, object]) -> list[int]:
    driver = (await conn.get_raw_connection()).driver_connection
    assert driver is not None
    row = await driver.fetchrow(statement.sql, *statement.arguments(values))
    assert row is not None
    return [int(count) for count in row]


def _committed(parts: Sequence[StatementPart], counts: Sequence[int]) -> None:
    for part, count in zip(parts, counts, strict=True):
        if part.committed is not None:
            part.committed(count)


async def create_in_one_statement(
    conn: AsyncConnection,
    version: StoredVersion,
    rows: IndexRows,
    parts: Sequence[StatementPart],
    keys: RowKeys,
) -> None:
    """Insert version 1 with its row ``keys``, history and index rows (and what ``parts`` add),
    outside any explicit transaction.

    ``conn`` must not be in a transaction: the statement commits by itself.
    Raises AlreadyExists when the id is taken, NotOneStatement when a part's
    veto may have held (nothing is written either way).
    """
    tables = _written_tables(rows)
    statement = create_statement(tables, parts)
    written, *done = await _fetch_counts(conn, statement, _values(version, rows, tables, parts, keys))
    if written != 1:
        raise _vetoed(parts) or AlreadyExists(f"{version.resource_type}/{version.id}")
    _committed(parts, done)


async def replace_in_one_statement(
    conn: AsyncConnection,
    expected_version: int,
    version: StoredVersion,
    rows: IndexRows,
    tables: Iterable[str],
    parts: Sequence[StatementPart],
    keys: RowKeys,
) -> bool:
    """Move the current row from ``expected_version`` to ``version`` (with its row ``keys``) and
    replace its index rows in ``tables`` by ``rows`` (and do what ``parts`` add); False (nothing
    written) when another writer moved it first. Raises NotOneStatement when nothing was written and a
    part's veto may be why."""
    inserts = _written_tables(rows)
    values = _values(version, rows, inserts, parts, keys)
    values["expected"] = expected_version
    statement = replace_statement(tuple(sorted(tables)), inserts, parts)
    written, *done = await _fetch_counts(conn, statement, values)
    if written != 1:
        vetoed = _vetoed(parts)
        if vetoed is not None:
            raise vetoed
        return False
    _committed(parts, done)
    return True
