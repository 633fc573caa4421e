"""Chained criteria judged on the index rows of the resources a write references.

A chained criterion (``CarePlan?subject.family=smith``) holds when one of the
written resource's references through the chain's parameter points at a live
resource of the chain's target type that matches the inner clause
(hl7.org/fhir/R4/search.html#chaining). The written resource's references are
in the index rows its write has just computed; what is missing is the
targets' side. Asking the database to run each subscription's chain costs a
statement as large as the number of chained subscriptions, every part of it
bound and looked up afresh at every write (on SQLite, where each write that
meets them is a transaction, that was most of what a thousand Subscriptions
cost a write). Instead, one small statement per index table reads the
targets' rows of the inner parameters, and every subscription's inner clause
is judged on them in memory by ``app.search.memory``, which interprets the
very SQL condition the compiler builds, so the meaning cannot drift. A write
whose references reach no target of a chain's type needs no statement at
all.

Index rows exist only for live resources (a delete removes them), so a
target's rows of the inner parameter are the whole question, exactly as the
compiler's chain subquery asks it of the index tables
(``app.search.compiler._indexed_ids``). Only positive inner clauses on a
text-valued index table (string, token, reference, uri) are judged here: a
``:missing`` or ``:not`` inner clause would hold for a target that does not
exist, and dates and numbers would compare values as read back from the
database; those, nested chains, ``_has``, and a subscription whose owner's
read gate narrows what it may see, are left to the database
(``app.subscriptions.matching.database_check``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, Table, bindparam, select
from sqlalchemy.ext.asyncio import AsyncConnection

from app.search.memory import ClauseCheck
from app.search.request import AnyClause, ChainClause, Clause
from app.storage.driver_select import DriverSelect
from app.storage.index_tables import INDEX_TABLES, IndexRows

# index tables whose values read back from the database exactly as the extraction produced them
JUDGED_TABLES = frozenset({"string", "token", "reference", "uri"})


@dataclass(frozen=True, slots=True)
class ChainCheck:
    """One chain clause, ready to be judged on its targets' rows: the chain parameter (its hash and
    the type it belongs to) and, per target type, the inner clause's check."""

    clause: ChainClause
    param_hash: int
    resource_type: str
    alternatives: tuple[tuple[str, ClauseCheck], ...]

    def targets(self, references: References) -> dict[str, set[str]]:
        """The ids, per target type of the chain, that the written resource references through it."""
        return references.get((self.param_hash, self.resource_type), {})


# the written resource's references: (parameter hash, resource type) -> target type -> ids
References = dict[tuple[int, str], dict[str, set[str]]]


def references_of(rows: IndexRows) -> References:
    """The written resource's reference rows, filed by parameter and target type: one pass for every
    chain of every subscription (judged here, or bound into the write's statement by
    ``app.subscriptions.matching.prewrite_values``)."""
    found: References = {}
    for row in rows.get("reference", ()):
        target_type, target_id = row["target_type"], row["target_id"]
        if target_type is not None and target_id is not None:
            by_type = found.setdefault((row["param_hash"], row["resource_type"]), {})
            by_type.setdefault(target_type, set()).add(target_id)
    return found


def chain_checks(clauses: Iterable[AnyClause]) -> tuple[ChainCheck, ...] | None:
    """The clauses as chain checks, or None when one of them is not a chain this module can judge
    (see the module docstring)."""
    checks: list[ChainCheck] = []
    for clause in clauses:
        if not isinstance(clause, ChainClause):
            return None
        alternatives: list[tuple[str, ClauseCheck]] = []
        for target_type, inner in clause.alternatives:
            check = _inner_check(inner)
            if check is None:
                return None
            alternatives.append((target_type, check))
        param = clause.param
        checks.append(ChainCheck(clause, param.hash, param.resource_type, tuple(alternatives)))
    return tuple(checks)


def _inner_check(inner: AnyClause) -> ClauseCheck | None:
    if not isinstance(inner, Clause) or inner.param.type not in JUDGED_TABLES:
        return None
    if inner.modifier in ("missing", "not"):
        return None
    check = ClauseCheck.of(inner)
    return check if check.conditions is not None else None


def _read_statement(table: Table, ids: int, hashes: int) -> Select[Any]:
    """The rows of some resources of one type for some parameters. Short lists (a write references a
    patient or two, chains ask one or two parameters of it) get a bound parameter per item, so the
    statement is compiled once per shape and bound as it is; longer ones are spread at execution."""
    c = table.c
    return select(table).where(
        c.resource_type == bindparam("target_type"),
        c.resource_id.in_([bindparam(f"id{n}") for n in range(ids)])
        if ids <= _SHORT
        else c.resource_id.in_(bindparam("ids", expanding=True)),
        c.param_hash.in_([bindparam(f"hash{n}") for n in range(hashes)])
        if hashes <= _SHORT
        else c.param_hash.in_(bindparam("hashes", expanding=True)),
    )


_SHORT = 4
_READS: dict[tuple[str, int, int], DriverSelect] = {}


def _read(table: str, ids: list[str], hashes: list[int], target_type: str) -> tuple[DriverSelect, dict[str, Any]]:
    """The statement (built once per table and shape, run on the driver: ``app.storage.driver_select``)
    and its values."""
    shape = (table, min(len(ids), _SHORT + 1), min(len(hashes), _SHORT + 1))
    statement = _READS.get(shape)
    if statement is None:
        statement = _READS[shape] = DriverSelect(_read_statement(INDEX_TABLES[table], len(ids), len(hashes)))
    values: dict[str, Any] = {"target_type": target_type}
    if len(ids) <= _SHORT:
        values.update((f"id{n}", value) for n, value in enumerate(ids))
    else:
        values["ids"] = ids
    if len(hashes) <= _SHORT:
        values.update((f"hash{n}", value) for n, value in enumerate(hashes))
    else:
        values["hashes"] = hashes
    return statement, values


Pending = Sequence[tuple[str, tuple[ChainCheck, ...]]]


async def judge_chains(conn: AsyncConnection, rows: IndexRows, pending: Pending) -> tuple[list[str], list[str]]:
    """Of the subscriptions in ``pending`` (each an id and its chain checks, all of which must hold),
    those the write whose index rows are ``rows`` matches, and those whose inner clauses turned out to
    need the database after all (a construct the interpreter does not know)."""
    wanted: dict[tuple[str, str], tuple[set[str], set[int]]] = {}  # (table, target type) -> ids, hashes
    references = references_of(rows)
    for _, checks in pending:
        for check in checks:
            targets = check.targets(references)
            for target_type, inner in check.alternatives:
                ids = targets.get(target_type)
                if ids:
                    param = inner.clause.param
                    want_ids, hashes = wanted.setdefault((param.type, target_type), (set(), set()))
                    want_ids.update(ids)
                    hashes.add(param.hash)
    found = await _read_rows(conn, wanted)
    matched: list[str] = []
    undecided: list[str] = []
    for subscription_id, checks in pending:
        verdicts = [_holds(check, check.targets(references), found) for check in checks]
        if False in verdicts:
            continue
        (undecided if None in verdicts else matched).append(subscription_id)
    return matched, undecided


async def _read_rows(
    conn: AsyncConnection, wanted: dict[tuple[str, str], tuple[set[str], set[int]]]
) -> dict[tuple[str, str], IndexRows]:
    """The index rows read for each (target type, id), per table."""
    found: dict[tuple[str, str], IndexRows] = {}
    for (table, target_type), (ids, hashes) in wanted.items():
        statement, values = _read(table, sorted(ids), sorted(hashes), target_type)
        columns = statement.columns
        for values_of_row in await statement.fetch(conn, values):
            row = dict(zip(columns, values_of_row, strict=True))
            found.setdefault((target_type, row["resource_id"]), {}).setdefault(table, []).append(row)
    return found


def _holds(check: ChainCheck, targets: dict[str, set[str]], found: dict[tuple[str, str], IndexRows]) -> bool | None:
    """Some target of an alternative's type meets its inner clause: True; none does: False; None when
    the interpreter could not judge one that might."""
    unknown = False
    for target_type, inner in check.alternatives:
        table = inner.clause.param.type
        for target_id in targets.get(target_type, ()):
            target_rows = found.get((target_type, target_id))
            if target_rows is None or table not in target_rows:
                continue  # a positive clause needs a row of its table: a target without one fails it
            verdict = inner.holds(target_rows)
            if verdict:
                return True
            unknown = unknown or verdict is None
    return None if unknown else False
