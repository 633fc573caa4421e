"""SQL compiled once from a Core construct for asyncpg, to run on the driver connection directly.

SQLAlchemy's execution of a cached statement costs some 50 to 200 us of Python per statement (its
cache key, parameter processing, result metadata, row objects, and on asyncpg the greenlet hops of its
adapter). The statements on the hottest paths (the single-statement writes, a read of the current
row) are compiled here once and run with ``fetch``/``fetchrow``; their values go to asyncpg as they are.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Select
from sqlalchemy.dialects.postgresql import asyncpg
from sqlalchemy.sql.elements import BindParameter

_DIALECT = asyncpg.dialect()  # type: ignore[no-untyped-call]


@dataclass(frozen=True, slots=True)
class Compiled:
    """A statement's SQL for asyncpg, the order its named parameters take as ``$1, $2, ...``, and the
    values bound inside the construct itself (used where the caller gives none)."""

    sql: str
    names: tuple[str, ...]
    defaults: Mapping[str, object] = field(default_factory=dict)

    def arguments(self, values: Mapping[str, object]) -> list[object]:
        return [values[name] if name in values else self.defaults[name] for name in self.names]


class _IntegersInline(asyncpg.PGCompiler_asyncpg):
    """The asyncpg compiler, writing integers bound inside the construct into the SQL.

    Such integers are constants of the statement's shape (a parameter's hash
    in a chained subscription's condition, the step of an event counter):
    sent as arguments they would be encoded again at every write, several per
    subscription part. An integer renders as its digits only (negative ones
    in parentheses, so that no ``--`` can start a comment), so nothing a
    client sent can become SQL this way; strings stay bound parameters.
    """

    # (SQLAlchemy's compiler methods are untyped: the override keeps their keyword arguments in ``kw``)
    def visit_bindparam(self, bindparam: BindParameter[Any], **kw: Any) -> str:  # type: ignore[override]
        value = bindparam.value
        if type(value) is int and bindparam.callable is None and not bindparam.expanding:
            return str(value) if value >= 0 else f"({value})"
        return str(super().visit_bindparam(bindparam, **kw))  # type: ignore[no-untyped-call]


def compile_for_asyncpg(statement: Select[Any]) -> Compiled:
    """The SQL asyncpg runs as is, with the values bound inside the construct keyed by the names its
    parameters carry (``params`` keys dotted names escaped); integers bound inside it are written into
    the SQL (``_IntegersInline``)."""
    compiled = _IntegersInline(_DIALECT, statement)
    names = tuple(compiled.positiontup or ())
    escaped = compiled.escaped_bind_names  # dotted names are keyed escaped in ``params``
    params = compiled.params
    defaults = {name: params[escaped.get(name, name)] for name in names if escaped.get(name, name) in params}
    return Compiled(compiled.string, names, defaults)
