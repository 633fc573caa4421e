"""The write gate: the one function through which every resource version is stored.

Creates, updates, deletes and patches (single requests, every transaction
and batch entry, conditional ones, bulk loads, and the server's own writes)
all end in ``ResourceWriter.write`` or, for many new resources at once,
``ResourceWriter.create_many``. Each stores the current row, the history
row and the index rows, then calls the writer's hooks **in the same
database transaction** with a ``Change`` (the version replaced, with its
body, and the version stored). That is the place for what must commit or
roll back with the write itself: the Subscriptions outbox (events of the
write) and rules that compare the previous and the new body (Task state
rules). A hook that raises a ``FhirError`` refuses the write: nothing of it
is stored.

Which statements run is decided here, not by the interactions:

- inside a caller's transaction (``conn`` given: transactions, conditional
  interactions, patches) the writes go through SQLAlchemy on that
  connection, on both backends;
- alone (``conn`` None: a plain create, update or delete), PostgreSQL
  writes each version (up to ``CHUNK_ROWS`` index rows) in **one statement** of data-modifying CTEs
  (``app.storage.single_statement``): no BEGIN/COMMIT round trips. A hook
  that ``concerns`` the written type (it watches Subscriptions on it) is asked to
  ``settle`` it first: what it decides without the database joins that
  statement as CTEs of its own (the outbox's event rows), so the hook's
  work still commits or rolls back with the write. When a hook cannot
  decide without the database, and on SQLite, the write is a transaction
  of its own (``Database.run_write``), and the hooks run inside it.

Concurrency: the current row moves by compare-and-set on its version
(``repository.replace_version``). ``expect=ANY`` (update, delete without
``If-Match``) re-reads and writes the version after a concurrent winner;
an expected version number (``If-Match``, a patch applied to the version it
read) fails with ``VersionConflict`` instead, as R4's managed concurrency
says (hl7.org/fhir/R4/http.html#concurrency).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Final, Protocol

from sqlalchemy.ext.asyncio import AsyncConnection

from app.errors import Forbidden, NotFound, VersionConflict
from app.storage.batch_insert import CHUNK_ROWS
from app.storage.database import Database, is_retryable
from app.storage.gate import Author, Letter, ReadGate
from app.storage.index_tables import IndexRows, merge_rows
from app.storage.index_writer import insert_index_rows, replace_index_rows
from app.storage.repository import (
    AlreadyExists,
    StoredVersion,
    insert_first,
    insert_new_many,
    matches,
    read_current,
    read_current_alone,
    replace_version,
)
from app.storage.row_keys import RowKeys
from app.storage.single_statement import (
    NotOneStatement,
    StatementPart,
    create_in_one_statement,
    replace_in_one_statement,
)
from app.storage.tables import resources

# How often a write without an expected version re-reads after losing a race before giving up (412).
MAX_ATTEMPTS: Final = 20


class _Any:
    def __repr__(self) -> str:
        return "ANY"


class _Absent:
    def __repr__(self) -> str:
        return "ABSENT"


ANY: Final = _Any()
"""Expect whatever version is current (or none): an update or delete without ``If-Match``."""
ABSENT: Final = _Absent()
"""Expect no current row: a create under a fresh id (a taken id raises ``AlreadyExists``)."""

Expect = int | _Any | _Absent


# Weight (``_weight``) above which a write's SQLite calls leave the event loop. Inline, a 512 KB body
# (stored twice: current and history rows) costs SQLite 4 ms of the loop on this kind of machine, 2 MB
# 15 ms, a 9 MB Patient with its 40,000 index rows most of a second; a thread hand-off costs a fifth
# of a millisecond per call.
LARGE_WRITE: Final = 512 * 1024


@dataclass(frozen=True, slots=True)
class NewVersion:
    """What one write stores, before its version number and time are known.

    ``render`` turns (version number, time) into the stored body bytes (the
    interaction stamps ``meta.versionId`` and ``meta.lastUpdated``); None
    makes the version a deletion (tombstone, no index rows). ``tables`` are
    the index tables the type can use: the old rows there are replaced.
    ``keys``: the search values the row itself carries (``app.storage.row_keys``).
    """

    resource_type: str
    id: str
    render: Callable[[int, datetime], bytes] | None
    rows: IndexRows
    tables: Collection[str]
    method: str
    keys: RowKeys

    @property
    def deletes(self) -> bool:
        return self.render is None


@dataclass(frozen=True, slots=True)
class Change:
    """One stored write as the hooks see it: the version it replaced (None: the id was new; a
    tombstone when the resource had been deleted) and the version it stored, with its index rows."""

    previous: StoredVersion | None
    stored: StoredVersion
    rows: IndexRows = field(default_factory=dict)
    author: Author | None = None  # whose token made the write (None: the server itself, or no token)

    @property
    def created(self) -> bool:
        """The write brought the resource (back) into existence: HTTP 201."""
        return not self.stored.deleted and (self.previous is None or self.previous.deleted)


class WriteHook(Protocol):
    """Called with every stored change of a type it ``concerns`` inside the write's transaction (see
    the module docstring)."""

    def concerns(self, resource_type: str) -> bool:
        """Whether writes of ``resource_type`` need this hook now (the others pay nothing for it)."""
        ...

    def settle(self, change: Change) -> Sequence[StatementPart] | None:
        """What the hook would do for ``change`` (not yet stored), decided without the database, as
        parts of the one statement that will store it on PostgreSQL (none: nothing to do); None when
        the hook needs the database to decide, and so must be called inside a write transaction."""
        ...

    async def __call__(self, conn: AsyncConnection, change: Change) -> None: ...


class _Unsettled:
    """A hook could not settle the write without the database: it needs a transaction."""


UNSETTLED: Final = _Unsettled()


class ResourceWriter:
    """The write gate over one database, with the hooks every write runs."""

    def __init__(self, db: Database, hooks: Sequence[WriteHook] = ()) -> None:
        self.db = db
        self.hooks = tuple(hooks)
        self._one_statement = db.dialect == "postgresql"

    def with_hooks(self, *hooks: WriteHook) -> ResourceWriter:
        """A writer that also runs ``hooks`` (Subscriptions and workflow rules register here)."""
        return ResourceWriter(self.db, (*self.hooks, *hooks))

    async def write(
        self, conn: AsyncConnection | None, new: NewVersion, expect: Expect, gate: ReadGate
    ) -> Change | None:
        """Store ``new`` if the current version is as expected; None for a deletion of nothing live.

        ``conn``: the caller's open write transaction, or None for a write that
        is its own atomic unit. ``gate``: what the caller may read and do; an
        existing resource outside it is ``NotFound``, as it would be to a read,
        and is not changed; a type the caller may not create (``expect`` ABSENT),
        update or delete is ``Forbidden``, and so is a new version that a
        caller confined to a compartment would put outside it. Raises
        ``VersionConflict`` (an expected version that is not current, or too
        many lost races) and ``AlreadyExists``.
        """
        if not gate.open:
            letter: Letter = "d" if new.deletes else "c" if expect is ABSENT else "u"
            if new.deletes:
                gate.require(new.resource_type, letter)
            else:
                gate.admits(new.resource_type, new.id, new.rows, letter)
        if conn is not None:
            return await self._write_until_stored(conn, new, expect, gate)
        if self._one_statement and gate.open and _fits_one_statement(new.rows):
            hooks = self._concerned(new)
            try:
                alone = await self._write_alone(new, expect, hooks, gate.author)
            except Exception as exc:
                # a statement carrying a hook's rows may meet a concurrent transaction's locks; it wrote
                # nothing, and the transaction below retries such conflicts
                if not (hooks and is_retryable(exc)):
                    raise
                alone = UNSETTLED
            if not isinstance(alone, _Unsettled):
                return alone
        return await self.db.run_write(lambda c: self._write_until_stored(c, new, expect, gate))

    async def create_many(
        self,
        conn: AsyncConnection,
        versions: Sequence[tuple[StoredVersion, IndexRows, RowKeys]],
        gate: ReadGate,
    ) -> None:
        """Version 1 of many resources under fresh ids (each with its index rows and row keys), in the
        caller's transaction: two batched statements plus one per index table, whatever their number
        (bulk loads, Bundle creates). Each must be one the caller may create (``gate``), or nothing is
        written (``Forbidden``)."""
        if not gate.open:
            for version, rows, _ in versions:
                gate.admits(version.resource_type, version.id, rows, "c")
        if sum(_weight(len(version.body or b""), rows) for version, rows, _ in versions) > LARGE_WRITE:
            await self.db.run_off_loop(conn)
        await insert_new_many(conn, [version for version, _, _ in versions], [keys for _, _, keys in versions])
        await insert_index_rows(conn, merge_rows([rows for _, rows, _ in versions]))
        if not gate.open:
            for version, _, _ in versions:
                await _require_match(conn, version.resource_type, version.id, gate, "c")
        for version, rows, _ in versions:
            await self._after(conn, Change(None, version, rows, gate.author))

    async def _write_until_stored(
        self, conn: AsyncConnection, new: NewVersion, expect: Expect, gate: ReadGate
    ) -> Change | None:
        """In ``conn``'s transaction: a lost race is seen by the next read (READ COMMITTED), and the
        version after the winner's is written."""
        for _ in range(MAX_ATTEMPTS):
            # a create under a fresh id need not look: the insert itself reports a taken id
            current = None if expect is ABSENT else await read_current(conn, new.resource_type, new.id)
            if current is not None and not gate.open:
                await _require_visible(conn, new, gate)
                if new.deletes:  # what a narrowed delete removes must match its query
                    await _require_match(conn, new.resource_type, new.id, gate, "d")
            step = _next(current, new, expect)
            if step is None:
                return None
            if _large(step):
                await self.db.run_off_loop(conn)
            if current is None:
                try:
                    await insert_first(conn, step.stored, new.keys)
                except AlreadyExists:
                    if expect is ABSENT:
                        raise
                    continue
                await replace_index_rows(conn, new.resource_type, new.id, new.rows, new.tables, is_new=True)
            elif await replace_version(conn, current.version_id, step.stored, new.keys):
                await replace_index_rows(conn, new.resource_type, new.id, new.rows, new.tables, is_new=False)
            else:
                _lost(new, expect)
                continue
            if not new.deletes and not gate.open:  # what a narrowed create or update stores must match
                await _require_match(conn, new.resource_type, new.id, gate, "c" if expect is ABSENT else "u")
            await self._after(conn, replace(step, author=gate.author))
            return step
        raise _too_often(new)

    async def _write_alone(
        self, new: NewVersion, expect: Expect, hooks: Sequence[WriteHook], author: Author | None
    ) -> Change | _Unsettled | None:
        """PostgreSQL: each attempt is one state read and one self-contained statement, with the parts
        ``hooks`` settle for it; UNSETTLED (nothing written) when one of them cannot."""
        for _ in range(MAX_ATTEMPTS):
            async with self.db.single_statement() as conn:
                current = None if expect is ABSENT else await read_current_alone(conn, new.resource_type, new.id)
                step = _next(current, new, expect)
                if step is None:
                    return None
                step = replace(step, author=author)
                parts: list[StatementPart] = []
                for hook in hooks:
                    settled = hook.settle(step)
                    if settled is None:
                        return UNSETTLED
                    parts.extend(settled)
                try:
                    if current is None:
                        try:
                            await create_in_one_statement(conn, step.stored, new.rows, parts, new.keys)
                        except AlreadyExists:
                            if expect is ABSENT:
                                raise
                            continue
                        return step
                    if await replace_in_one_statement(
                        conn, current.version_id, step.stored, new.rows, new.tables, parts, new.keys
                    ):
                        return step
                except NotOneStatement:  # nothing was written
                    return UNSETTLED
                _lost(new, expect)
        raise _too_often(new)

    def _concerned(self, new: NewVersion) -> list[WriteHook]:
        return [hook for hook in self.hooks if hook.concerns(new.resource_type)]

    async def _after(self, conn: AsyncConnection, change: Change) -> None:
        for hook in self.hooks:
            if hook.concerns(change.stored.resource_type):
                await hook(conn, change)


def _weight(body_bytes: int, rows: IndexRows) -> int:
    """What writing a body and its index rows costs the database, in bytes of body: a hundred apiece for
    the rows (about what one costs SQLite to insert or delete, against a byte of body). Above
    ``LARGE_WRITE`` the write's statements and commit leave the loop on inline SQLite
    (``Database.run_off_loop``)."""
    return body_bytes + 100 * sum(len(table_rows) for table_rows in rows.values())


def _large(change: Change) -> bool:
    """Whether a write stores or replaces so much (a body of megabytes, thousands of index rows) that
    its statements and commit run in a worker thread on inline SQLite."""
    previous = change.previous
    replaced = 0 if previous is None else len(previous.body or b"")
    return max(_weight(len(change.stored.body or b""), change.rows), replaced) > LARGE_WRITE


def _fits_one_statement(rows: IndexRows) -> bool:
    """Whether a version is small enough for the single statement. One with more index rows than a
    chunk of the transactional path (a Patient with thousands of names) is written by that path,
    which inserts them chunk by chunk and lets the event loop serve others in between: in one
    statement the driver would encode every row's values on the loop at once, holding up every other
    client for a few hundred milliseconds (asyncpg, 80,000 rows)."""
    return sum(len(table_rows) for table_rows in rows.values()) <= CHUNK_ROWS


async def _require_visible(conn: AsyncConnection, new: NewVersion, gate: ReadGate) -> None:
    """A caller may change only what it may read: anything else is not found (nothing written)."""
    if await read_current(conn, new.resource_type, new.id, gate) is None:
        raise NotFound(f"{new.resource_type}/{new.id} is not known")


async def _require_match(
    conn: AsyncConnection, resource_type: str, resource_id: str, gate: ReadGate, letter: Letter
) -> None:
    """A write that only granular scopes permit must be of a resource their queries match, judged on
    the stored version's index rows inside the write's transaction: otherwise 403 and nothing stays."""
    if not gate.narrowed_write(resource_type, letter):
        return
    if not await matches(conn, resource_type, resource_id, gate.write_match(resource_type, letter, resources.c.id)):
        raise Forbidden(f"{resource_type}/{resource_id} is outside what the access token's granular scopes permit")


def _next(current: StoredVersion | None, new: NewVersion, expect: Expect) -> Change | None:
    """The change that moves ``current`` to the next version; None when deleting nothing live."""
    if isinstance(expect, int) and (current is None or current.version_id != expect):
        have = "no version" if current is None else f"version {current.version_id}"
        raise VersionConflict(f"If-Match expects version {expect} but {new.resource_type}/{new.id} has {have}")
    if expect is ABSENT and current is not None:
        raise AlreadyExists(f"{new.resource_type}/{new.id}")
    if new.deletes and (current is None or current.deleted):
        return None
    now = datetime.now(UTC)
    if current is None:
        number = 1
    else:
        number = current.version_id + 1
        now = max(now, current.last_updated)  # a version is never older than the one it replaces
    body = None if new.render is None else new.render(number, now)
    stored = StoredVersion(new.resource_type, new.id, number, now, new.deletes, body, new.method)
    return Change(current, stored, new.rows)


def _lost(new: NewVersion, expect: Expect) -> None:
    """A concurrent writer moved the row between our read and our write."""
    if isinstance(expect, int):
        raise VersionConflict(f"{new.resource_type}/{new.id} was changed by another request")


def _too_often(new: NewVersion) -> VersionConflict:
    return VersionConflict(f"{new.resource_type}/{new.id} is being changed too often; try again")
