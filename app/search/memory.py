"""Search clauses judged on one resource's own index rows, in memory, without a statement.

A Subscription asks, at every write, whether the written resource matches
its criteria (hl7.org/fhir/R4/subscription.html#2.46.7.1: "the same search,
restricted to that resource"). Asking the database costs a statement per
subscription; most criteria are plain parameters (``status=requested``,
``owner=Practitioner/1``, ``code=http://loinc.org|1234-5``) whose answer is
in the index rows the write has just computed. This module answers those
by interpreting **the very SQL condition** each parameter type builds
(``app.search.types``) over those rows, so the meaning cannot drift from
the database's: comparisons, ``LIKE`` with an escape, ``IN``, ``IS NULL``,
``AND``/``OR``/``NOT``, with SQL's unknown for NULL operands.

What cannot be judged from the resource's own rows (chains, ``_has``,
composites, ``_id``/``_lastUpdated`` columns, a construct the interpreter
does not know) is reported as ``None``: the caller asks the database.
Strings compare by code point, as PostgreSQL's C collation and SQLite's
BINARY collation do on the index columns.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.sql import operators
from sqlalchemy.sql.elements import (
    BinaryExpression,
    BindParameter,
    BooleanClauseList,
    ColumnClause,
    False_,
    Grouping,
    Null,
    True_,
    UnaryExpression,
)

from app.search.request import AnyClause, Clause
from app.search.types import COLUMN_PARAMETERS, PARAM_TYPES
from app.search.types.special import MissingSearch
from app.storage.index_tables import INDEX_TABLES, IndexRows

Row = Mapping[str, Any]


class NotInterpretable(Exception):
    """The condition uses a construct this module does not evaluate: ask the database."""


_COMPARISONS = {
    operators.eq: lambda a, b: a == b,
    operators.ne: lambda a, b: a != b,
    operators.lt: lambda a, b: a < b,
    operators.le: lambda a, b: a <= b,
    operators.gt: lambda a, b: a > b,
    operators.ge: lambda a, b: a >= b,
}


def _operand(element: Any, row: Row) -> Any:
    if isinstance(element, Grouping):
        return _operand(element.element, row)
    if isinstance(element, BindParameter):
        return element.effective_value
    if isinstance(element, ColumnClause):
        if element.name not in row:
            raise NotInterpretable(f"no column {element.name}")
        return row[element.name]
    if isinstance(element, Null):
        return None
    raise NotInterpretable(type(element).__name__)


def _like(value: str, pattern: str, escape: str | None) -> bool:
    """SQL ``LIKE``: ``%`` any run, ``_`` one character, ``escape`` quotes the next one."""
    parts: list[str] = []
    index = 0
    while index < len(pattern):
        char = pattern[index]
        if escape is not None and char == escape and index + 1 < len(pattern):
            parts.append(re.escape(pattern[index + 1]))
            index += 2
            continue
        parts.append(".*" if char == "%" else "." if char == "_" else re.escape(char))
        index += 1
    return re.fullmatch("".join(parts), value, re.DOTALL) is not None


def evaluate(condition: Any, row: Row) -> bool | None:
    """``condition`` (a ``ColumnElement[bool]``) on one index row: True, False, or None for SQL's
    unknown (a NULL operand)."""
    if isinstance(condition, True_):
        return True
    if isinstance(condition, False_):
        return False
    if isinstance(condition, Grouping):
        return evaluate(condition.element, row)
    if isinstance(condition, BooleanClauseList):
        results = [evaluate(part, row) for part in condition.clauses]
        if condition.operator is operators.and_:
            return False if False in results else None if None in results else True
        if condition.operator is operators.or_:
            return True if True in results else None if None in results else False
        raise NotInterpretable(str(condition.operator))
    if isinstance(condition, UnaryExpression) and condition.operator is operators.inv:
        inner = evaluate(condition.element, row)
        return None if inner is None else not inner
    if isinstance(condition, BinaryExpression):
        return _binary(condition, row)
    raise NotInterpretable(type(condition).__name__)


def _binary(condition: BinaryExpression[Any], row: Row) -> bool | None:
    op = condition.operator
    left = _operand(condition.left, row)
    if op is operators.is_:
        return left is None
    if op is operators.is_not:
        return left is not None
    if op in (operators.in_op, operators.not_in_op):
        choices = _operand(condition.right, row)
        if left is None:
            return None
        found = left in choices
        return found if op is operators.in_op else not found
    right = _operand(condition.right, row)
    if left is None or right is None:
        return None
    if op in (operators.like_op, operators.not_like_op):
        found = _like(left, right, condition.modifiers.get("escape"))
        return found if op is operators.like_op else not found
    compare = _COMPARISONS.get(op)
    if compare is None:
        raise NotInterpretable(str(op))
    return bool(compare(left, right))


def _rows_of(clause: Clause, rows: IndexRows) -> list[Row]:
    param = clause.param
    return [
        row
        for row in rows.get(param.type, ())
        if row["param_hash"] == param.hash and row["resource_type"] == param.resource_type
    ]


@dataclass(frozen=True, slots=True)
class ClauseCheck:
    """One clause, ready to be judged many times: its SQL conditions are built once (building them is
    most of the cost). ``conditions`` None: only the database can judge it."""

    clause: AnyClause
    conditions: tuple[Any, ...] | None

    @classmethod
    def of(cls, clause: AnyClause) -> ClauseCheck:
        if not isinstance(clause, Clause):
            return cls(clause, None)
        param = clause.param
        if param.code in COLUMN_PARAMETERS or param.type not in INDEX_TABLES:  # composites: no table of their own
            return cls(clause, None)
        if isinstance(clause.values[0], MissingSearch):
            return cls(clause, ())
        columns = INDEX_TABLES[param.type].c
        return cls(
            clause, tuple(PARAM_TYPES[param.type].condition(value, clause.modifier, columns) for value in clause.values)
        )

    def holds(self, rows: IndexRows) -> bool | None:
        """Whether the resource whose index rows are ``rows`` satisfies the clause; None when only the
        database can tell (see the module docstring). Mirrors ``app.search.compiler.clause_condition``:
        some row of the parameter meets one of the values; ``:not``, none does; ``:missing``, the
        parameter has rows or has none."""
        if self.conditions is None:
            return None
        clause = self.clause
        assert isinstance(clause, Clause)
        own = _rows_of(clause, rows)
        first = clause.values[0]
        if isinstance(first, MissingSearch):
            return not own if first.missing else bool(own)
        try:
            hit = any(evaluate(condition, row) is True for row in own for condition in self.conditions)
        except NotInterpretable:
            return None
        return not hit if clause.modifier == "not" else hit


def clauses_hold(checks: Sequence[ClauseCheck], rows: IndexRows) -> tuple[bool, tuple[AnyClause, ...]]:
    """(False, ()) when some clause certainly fails; otherwise (True, the clauses only the database
    can judge)."""
    undecided: list[AnyClause] = []
    for check in checks:
        verdict = check.holds(rows)
        if verdict is False:
            return False, ()
        if verdict is None:
            undecided.append(check.clause)
    return True, tuple(undecided)
