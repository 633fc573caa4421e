"""``SearchRequest`` -> SQLAlchemy Core ``Select`` of matching resource ids: pure, no I/O.

Each clause becomes ``resources.id IN (SELECT resource_id FROM idx_<type>
WHERE param_hash = :h AND resource_type = :t AND <value condition>)`` (one
index range scan per value), ORed over the clause's values and ANDed over
clauses. ``resource_type`` is implied by the hash but spelled out so that
PostgreSQL can also probe a clause per candidate row through the
``(resource_type, resource_id)`` index: when its estimates are off (skewed
codes such as ``status=requested``), that probe keeps a misjudged nested
loop cheap instead of rescanning every matching row. ``_id`` and
``_lastUpdated`` are columns of ``resources`` itself. Date semantics follow
search.html#prefix with both the index value and the search value as
closed ranges.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, false, func, not_, or_, select, true

from app.errors import InvalidRequest
from app.search.dates import parse_date_range, widen
from app.search.params import split_escaped, split_prefix, unescape
from app.search.request import AnyClause, ChainClause, Clause, HasClause, SearchRequest, SortKey
from app.search.values import DateValue, normalize_string
from app.storage.gate import OPEN, ReadGate
from app.storage.index_tables import (
    INDEX_TABLES,
    MAX_INDEXED_BYTES,
    MAX_INDEXED_CHARS,
    MAX_TYPE_CHARS,
    Columns,
    indexed_text,
)
from app.storage.tables import resources

R = resources.c


def _bad(clause: Clause, value: str, why: str) -> InvalidRequest:
    return InvalidRequest(f"{clause.name}={value}: {why}", [clause.name])


def _prefix_range(column: ColumnElement[str], prefix: str) -> ColumnElement[bool]:
    """``column`` starts with ``prefix``, as a range so a B-tree index serves it."""
    return and_(column >= prefix, column < prefix + "\U0010ffff")


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


# --- token -----------------------------------------------------------------


def token_condition(clause: Clause, value: str, t: Columns) -> ColumnElement[bool]:
    if clause.modifier == "text":
        return _prefix_range(t.display_norm, normalize_string(unescape(value))[:MAX_INDEXED_CHARS])
    parts = split_escaped(value, "|")
    if len(parts) == 1:
        return t.code == indexed_text(unescape(parts[0]))
    system, code = unescape(parts[0]), unescape("|".join(parts[1:]))
    conditions = [t.system.is_(None) if system == "" else t.system == indexed_text(system)]
    if code:
        conditions.append(t.code == indexed_text(code))
    return and_(*conditions)


# --- string ----------------------------------------------------------------


def string_condition(clause: Clause, value: str, s: Columns) -> ColumnElement[bool]:
    text = unescape(value)
    if clause.modifier == "exact":
        return s.value_exact == text
    normalized = normalize_string(text)[:MAX_INDEXED_CHARS]
    if clause.modifier == "contains":
        return s.value_norm.like(f"%{_like_escape(normalized)}%", escape="\\")
    return _prefix_range(s.value_norm, normalized)


# --- reference ---------------------------------------------------------------


def reference_condition(clause: Clause, value: str, ref: Columns) -> ColumnElement[bool]:
    if clause.modifier == "identifier":
        return identifier_condition(clause, value, ref)
    text = unescape(value)
    type_modifier = clause.modifier if clause.modifier and clause.modifier[:1].isupper() else None
    if "://" in text or text.startswith("urn:"):
        parts = text.rstrip("/").split("/")
        if len(parts) >= 2 and parts[-2][:1].isupper():
            by_id = and_(ref.target_type == parts[-2][:MAX_TYPE_CHARS], ref.target_id == indexed_text(parts[-1]))
            return or_(ref.url == indexed_text(text), by_id)
        return ref.url == indexed_text(text)
    if "/" in text:
        target_type, _, target_id = text.partition("/")
        return and_(ref.target_type == target_type[:MAX_TYPE_CHARS], ref.target_id == indexed_text(target_id))
    if type_modifier:
        return and_(ref.target_type == type_modifier, ref.target_id == indexed_text(text))
    return ref.target_id == indexed_text(text)


def identifier_condition(clause: Clause, value: str, ref: Columns) -> ColumnElement[bool]:
    """``subject:identifier=system|value`` matches ``Reference.identifier`` (search.html#reference)."""
    parts = split_escaped(value, "|")
    if len(parts) == 1:
        return ref.identifier_value == indexed_text(unescape(parts[0]))
    system, code = unescape(parts[0]), unescape("|".join(parts[1:]))
    conditions = [ref.identifier_system.is_(None) if system == "" else ref.identifier_system == indexed_text(system)]
    if code:
        conditions.append(ref.identifier_value == indexed_text(code))
    else:
        conditions.append(ref.identifier_value.is_not(None))
    return and_(*conditions)


# --- uri ---------------------------------------------------------------------


def uri_condition(clause: Clause, value: str, u: Columns) -> ColumnElement[bool]:
    text = unescape(value)
    if clause.modifier == "below":
        return _prefix_range(u.value, text if len(text.encode()) <= MAX_INDEXED_BYTES else indexed_text(text)[:-33])
    if clause.modifier == "above":
        segments = text.split("/")
        prefixes = ["/".join(segments[:end]) for end in range(3, len(segments) + 1)]
        return u.value.in_([indexed_text(p) for p in prefixes or [text]])
    return u.value == indexed_text(text)


# --- date --------------------------------------------------------------------


def date_range_condition(
    prefix: str, low: datetime, high: datetime, col_low: ColumnElement[datetime], col_high: ColumnElement[datetime]
) -> ColumnElement[bool]:
    """Index range [col_low, col_high] against search range [low, high] (search.html#prefix)."""
    if prefix == "eq":
        return and_(col_low >= low, col_high <= high)
    if prefix == "ne":
        return or_(col_low < low, col_high > high)
    if prefix == "gt":
        return col_high > high
    if prefix == "lt":
        return col_low < low
    if prefix == "ge":
        return col_high >= low
    if prefix == "le":
        return col_low <= high
    if prefix == "sa":
        return col_low > high
    if prefix == "eb":
        return col_high < low
    # ap: within 10% of the distance between the value and now, as HAPI does
    now = datetime.now(UTC)
    margin = max(abs(now - low) * 0.1, timedelta(days=1))
    near = widen(DateValue(low, high), margin)
    return and_(col_low <= near.high, col_high >= near.low)


def _date_value(clause: Clause, value: str) -> tuple[str, datetime, datetime]:
    prefix, text = split_prefix(value)
    parsed = parse_date_range(text)
    if parsed is None:
        raise _bad(clause, value, "not a valid date (YYYY, YYYY-MM, YYYY-MM-DD or dateTime)")
    return prefix, parsed.low, parsed.high


def date_condition(clause: Clause, value: str, d: Columns) -> ColumnElement[bool]:
    prefix, low, high = _date_value(clause, value)
    return date_range_condition(prefix, low, high, d.low, d.high)


# --- number and quantity -------------------------------------------------------


_DECIMAL = re.compile(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?")


def _decimal(clause: Clause, value: str, text: str) -> Decimal:
    """A FHIR decimal (datatypes.html#decimal) within about 1e-300..1e300, so that range arithmetic
    and both databases' numeric types can hold it."""
    if len(text) > 64 or not _DECIMAL.fullmatch(text):
        raise _bad(clause, value, "not a number")
    try:
        number = Decimal(text)
    except InvalidOperation:
        raise _bad(clause, value, "not a number") from None
    if number and not -300 < number.adjusted() < 300:
        raise _bad(clause, value, "the number is outside the supported range (1e-300 to 1e300)")
    return number


def number_range_condition(prefix: str, number: Decimal, column: ColumnElement[Decimal]) -> ColumnElement[bool]:
    """Implicit precision: ``100`` means [99.5, 100.5) (search.html#number)."""
    exponent = number.as_tuple().exponent
    half = Decimal(5).scaleb(int(exponent) - 1) if isinstance(exponent, int) else Decimal(0)
    low, high = number - half, number + half
    beyond_double = float(low) == float(high)  # SQLite compares as REAL: make the range closed
    if prefix == "eq":
        if beyond_double:
            return and_(column >= low, column <= high)
        return and_(column >= low, column < high)
    if prefix == "ne":
        return or_(column < low, column > high) if beyond_double else or_(column < low, column >= high)
    if prefix in ("gt", "sa"):
        return column > number
    if prefix in ("lt", "eb"):
        return column < number
    if prefix == "ge":
        return column >= number
    if prefix == "le":
        return column <= number
    margin = abs(number) * Decimal("0.1")  # ap: within 10%
    return and_(column >= number - margin, column <= number + margin)


def number_condition(clause: Clause, value: str, n: Columns) -> ColumnElement[bool]:
    prefix, text = split_prefix(value)
    return number_range_condition(prefix, _decimal(clause, value, text), n.value)


def quantity_condition(clause: Clause, value: str, q: Columns) -> ColumnElement[bool]:
    parts = split_escaped(value, "|")
    prefix, text = split_prefix(parts[0])
    conditions = [number_range_condition(prefix, _decimal(clause, value, text), q.value)]
    if len(parts) == 3:
        system, code = unescape(parts[1]), unescape(parts[2])
        if system:
            conditions.append(q.system == indexed_text(system))
        if code:
            conditions.append(q.code == indexed_text(code))
    elif len(parts) != 1:
        raise _bad(clause, value, "a quantity is [prefix]number or [prefix]number|system|code")
    return and_(*conditions)


# (clause, one value, the index table's columns) -> condition on that table
VALUE_CONDITIONS: dict[str, Callable[[Clause, str, Columns], ColumnElement[bool]]] = {
    "token": token_condition,
    "string": string_condition,
    "reference": reference_condition,
    "uri": uri_condition,
    "date": date_condition,
    "number": number_condition,
    "quantity": quantity_condition,
}


# --- composite -----------------------------------------------------------------


def composite_ids(clause: Clause, value: str) -> Select[str]:
    """Ids with one combination matching every ``$``-separated part (search.html#composite).

    Each component's rows are in its type's table; rows of one combination
    share ``combo``, so the parts join on (resource_id, combo).
    """
    components = clause.param.components
    parts = split_escaped(value, "$")
    if len(parts) != len(components):
        raise _bad(clause, value, f"a value of this composite has {len(components)} parts separated by '$'")
    tables = [INDEX_TABLES[c.type].alias(f"composite_{i}") for i, c in enumerate(components)]
    first = tables[0].c
    conditions: list[ColumnElement[bool]] = []
    for index, (component, table, part) in enumerate(zip(components, tables, parts, strict=True)):
        if part == "":
            raise _bad(clause, value, f"part {index + 1} of the composite value is empty")
        conditions += [table.c.param_hash == component.hash, table.c.resource_type == clause.param.resource_type]
        conditions.append(VALUE_CONDITIONS[component.type](clause, part, table.c))
        if index:
            conditions += [table.c.resource_id == first.resource_id, table.c.combo == first.combo]
    return select(first.resource_id).where(*conditions).correlate(None)


# --- clauses -------------------------------------------------------------------


def _column_clause(clause: Clause, r: Columns) -> ColumnElement[bool]:
    if clause.param.code == "_id":
        ids = [unescape(v) for v in clause.values]
        condition = r.id.in_(ids)
        return not_(condition) if clause.modifier == "not" else condition
    ranges = []
    for value in clause.values:
        prefix, low, high = _date_value(clause, value)
        ranges.append(date_range_condition(prefix, low, high, r.last_updated, r.last_updated))
    return or_(*ranges)


def _matching_ids(resource_type: str, clause: AnyClause, gate: ReadGate) -> Select[str]:
    """Ids of live ``resource_type`` resources matching ``clause`` that the gate lets the caller see (for
    chains and _has: a chain must not find resources through ones the caller cannot read).

    Index rows exist only for live resources (a delete removes them), so a
    clause answered by the index alone needs no join to ``resources``.
    """
    direct = _indexed_ids(clause, gate)
    if direct is not None:
        return direct if gate.open else direct.where(gate.ids(resource_type, direct.selected_columns[0]))
    other = resources.alias()
    return (
        select(other.c.id)
        .where(
            other.c.resource_type == resource_type,
            other.c.deleted.is_(False),
            clause_condition(clause, other.c, resource_type, gate),
            gate.ids(resource_type, other.c.id),
        )
        .correlate(None)
    )


def _indexed_ids(clause: AnyClause, gate: ReadGate) -> Select[str] | None:
    """The ids matching a positive clause, from the index tables alone; None when that is not possible."""
    ref = INDEX_TABLES["reference"].c
    if isinstance(clause, ChainClause):
        targets = [
            and_(ref.target_type == target_type, ref.target_id.in_(_matching_ids(target_type, inner, gate)))
            for target_type, inner in clause.alternatives
        ]
        linked = select(ref.resource_id).where(
            ref.param_hash == clause.param.hash, ref.resource_type == clause.param.resource_type, or_(*targets)
        )
        return linked.correlate(None)
    if isinstance(clause, HasClause):
        return None  # yields reference targets, which need not exist
    param = clause.param
    if param.code in ("_id", "_lastUpdated") or param.type == "composite" or clause.modifier in ("missing", "not"):
        return None
    table = INDEX_TABLES[param.type]
    build = VALUE_CONDITIONS[param.type]
    return (
        select(table.c.resource_id)
        .where(
            table.c.param_hash == param.hash,
            table.c.resource_type == param.resource_type,
            or_(*(build(clause, value, table.c) for value in clause.values)),
        )
        .correlate(None)
    )


def clause_condition(
    clause: AnyClause, r: Columns = R, resource_type: str | None = None, gate: ReadGate = OPEN
) -> ColumnElement[bool]:
    """The condition on resource columns ``r`` (the main table or an alias) for one clause; ``gate``
    restricts the resources chains and ``_has`` reach.

    Every subquery is uncorrelated (``IN (SELECT ...)``) and says so, because a
    chain or _has nests selects from the same index table, which SQLAlchemy
    would otherwise correlate to the enclosing one.
    """
    direct = _indexed_ids(clause, gate)
    if direct is not None:
        return r.id.in_(direct)
    if isinstance(clause, HasClause):
        ref = INDEX_TABLES["reference"].c
        sources = select(ref.target_id).where(
            ref.param_hash == clause.param.hash,
            ref.resource_type == clause.source_type,
            ref.target_type == (resource_type or clause.target_type),
            ref.resource_id.in_(_matching_ids(clause.source_type, clause.inner, gate)),
        )
        return r.id.in_(sources.correlate(None))
    assert isinstance(clause, Clause)
    param = clause.param
    if param.code in ("_id", "_lastUpdated"):
        if clause.modifier == "missing":
            return false() if clause.values[0] == "true" else true()
        return _column_clause(clause, r)
    if param.type == "composite":
        if clause.modifier == "missing":
            first = INDEX_TABLES[param.components[0].type].c
            has_rows = r.id.in_(
                select(first.resource_id).where(
                    first.param_hash == param.components[0].hash, first.resource_type == param.resource_type
                )
            )
            return not_(has_rows) if clause.values[0] == "true" else has_rows
        return or_(*(r.id.in_(composite_ids(clause, value)) for value in clause.values))
    table = INDEX_TABLES[param.type]
    rows_of_param = (
        select(table.c.resource_id)
        .where(table.c.param_hash == param.hash, table.c.resource_type == param.resource_type)
        .correlate(None)
    )
    if clause.modifier == "missing":
        has_rows = r.id.in_(rows_of_param)
        return not_(has_rows) if clause.values[0] == "true" else has_rows
    build = VALUE_CONDITIONS[param.type]
    matches = or_(*(build(clause, value, table.c) for value in clause.values))
    return not_(r.id.in_(rows_of_param.where(matches)))  # the :not modifier


def compartment_condition(request: SearchRequest) -> ColumnElement[bool]:
    """Referencing the compartment's resource through any of its parameters (compartmentdefinition.html)."""
    compartment = request.compartment
    if compartment is None:
        return true()
    ref = INDEX_TABLES["reference"].c
    linked = select(ref.resource_id).where(
        ref.param_hash.in_([p.hash for p in compartment.params]),
        ref.resource_type == request.resource_type,
        ref.target_type == compartment.type,
        ref.target_id == compartment.id,
    )
    return R.id.in_(linked)


def _filtered(query: Select, request: SearchRequest, gate: ReadGate) -> Select:  # type: ignore[type-arg]
    for clause in request.clauses:
        query = query.where(clause_condition(clause, R, request.resource_type, gate))
    if request.compartment is not None:
        query = query.where(compartment_condition(request))
    if not gate.open:
        query = query.where(gate.ids(request.resource_type, R.id))
    return query


_SORT_COLUMN = {
    "string": "value_norm",
    "token": "code",
    "reference": "target_id",
    "number": "value",
    "quantity": "value",
    "uri": "value",
}


def sort_expression(key: SortKey) -> ColumnElement[Any]:
    """The value a resource sorts by: lowest for ascending, highest for descending (search.html#_sort)."""
    if key.param.code == "_id":
        return R.id
    if key.param.code == "_lastUpdated":
        return R.last_updated
    table = INDEX_TABLES[key.param.type]
    if key.param.type == "date":
        column = table.c.high if key.descending else table.c.low
    else:
        column = table.c[_SORT_COLUMN[key.param.type]]
    aggregate = func.max(column) if key.descending else func.min(column)
    return (
        select(aggregate)
        .where(
            table.c.param_hash == key.param.hash, table.c.resource_type == R.resource_type, table.c.resource_id == R.id
        )
        .scalar_subquery()
    )


def _after(columns: list[Any], keys: tuple[SortKey, ...], values: list[Any], id_column: Any, last_id: str) -> Any:
    """Rows after the cursor in (sort keys, nulls last, id) order."""
    alternatives = []
    equal_so_far: list[Any] = []
    for column, key, value in zip(columns, keys, values, strict=True):
        if value is None:  # in the nulls: only equal (null) values can follow
            equal_so_far.append(column.is_(None))
            continue
        beyond = column < value if key.descending else column > value
        alternatives.append(and_(*equal_so_far, or_(beyond, column.is_(None))))
        equal_so_far.append(column == value)
    alternatives.append(and_(*equal_so_far, id_column > last_id))
    return or_(*alternatives)


def compile_search(request: SearchRequest, cursor: list[Any] | None, limit: int, gate: ReadGate = OPEN) -> Select[Any]:
    """(id, body, sort values...) of live matches in sort order, after the keyset ``cursor``.

    The cursor holds the last row's sort values and id, so paging stays exact
    under concurrent writes without OFFSET.
    """
    sort_columns = [sort_expression(key).label(f"sort_{i}") for i, key in enumerate(request.sort)]
    inner = _filtered(
        select(R.id, R.body, *sort_columns).where(R.resource_type == request.resource_type, R.deleted.is_(False)),
        request,
        gate,
    ).subquery()
    columns = [inner.c[f"sort_{i}"] for i in range(len(sort_columns))]
    query = select(inner.c.id, inner.c.body, *columns)
    if cursor is not None:
        query = query.where(_after(columns, request.sort, cursor[:-1], inner.c.id, cursor[-1]))
    order = []
    for column, key in zip(columns, request.sort, strict=True):
        order.append(column.desc().nulls_last() if key.descending else column.asc().nulls_last())
    return query.order_by(*order, inner.c.id).limit(limit)


def compile_count(request: SearchRequest, gate: ReadGate = OPEN) -> Select[int]:
    query = (
        select(func.count())
        .select_from(resources)
        .where(R.resource_type == request.resource_type, R.deleted.is_(False))
    )
    return _filtered(query, request, gate)
