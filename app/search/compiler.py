"""``SearchRequest`` -> SQLAlchemy Core ``Select`` of matching resource ids: pure, no I/O.

Only the composition lives here: AND over clauses, OR over a clause's
values, chains and ``_has`` as nested id subqueries, ``:missing``/``:not``,
compartments, the read gate, ``_sort`` and the keyset cursor. What one
value means on one index row belongs to its parameter type
(``app.search.types``); every value arrives parsed, so nothing here raises
about the query's syntax.

Each clause becomes ``resources.id IN (SELECT resource_id FROM idx_<type>
WHERE param_hash = :h AND resource_type = :t AND <value condition>)`` (one
index range scan per value), ORed over the clause's values and ANDed over
clauses; a resource's subject and status are also columns of its own row,
which answer the commonest searches in one range scan
(``app.search.row_columns``). ``resource_type`` is implied by the hash but spelled out so that
PostgreSQL can also probe a clause per candidate row through the
``(resource_type, resource_id)`` index: when its estimates are off (skewed
codes such as ``status=requested``), that probe keeps a misjudged nested
loop cheap instead of rescanning every matching row. ``_id`` and
``_lastUpdated`` are columns of ``resources`` itself.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, any_, exists, false, func, not_, or_, select, true

from app.search.request import AnyClause, ChainClause, Clause, HasClause, SearchRequest, SortKey
from app.search.row_conditions import on_row, row_condition
from app.search.types import COLUMN_PARAMETERS, PARAM_TYPES, SearchValue
from app.search.types.composite import CompositeSearch
from app.search.types.special import MissingSearch, column_condition
from app.storage.gate import OPEN, ReadGate
from app.storage.index_tables import INDEX_TABLES, Columns
from app.storage.tables import resources

R = resources.c


def value_condition(clause: Clause, value: SearchValue, columns: Columns) -> ColumnElement[bool]:
    """One typed value of ``clause`` on a row of its type's index table (``app.search.types``)."""
    return PARAM_TYPES[clause.param.type].condition(value, clause.modifier, columns)


def composite_ids(clause: Clause, value: CompositeSearch) -> Select[str]:
    """Ids with one combination matching every part of ``value`` (search.html#composite).

    Each component's rows are in its type's table; rows of one combination
    share ``combo``, so the parts join on (resource_id, combo).
    """
    components = clause.param.components
    tables = [INDEX_TABLES[c.type].alias(f"composite_{i}") for i, c in enumerate(components)]
    first = tables[0].c
    conditions: list[ColumnElement[bool]] = []
    for index, (component, table, part) in enumerate(zip(components, tables, value.parts, strict=True)):
        conditions += [table.c.param_hash == component.hash, table.c.resource_type == clause.param.resource_type]
        conditions.append(PARAM_TYPES[component.type].condition(part, None, table.c))
        if index:
            conditions += [table.c.resource_id == first.resource_id, table.c.combo == first.combo]
    return select(first.resource_id).where(*conditions).correlate(None)


# --- clauses -------------------------------------------------------------------


def _matching_ids(resource_type: str, clause: AnyClause, gate: ReadGate) -> Select[str]:
    """Ids of live ``resource_type`` resources matching ``clause`` that the gate lets the caller see (for
    chains and _has: a chain must not find resources through ones the caller cannot read).

    Index rows exist only for live resources (a delete removes them), so a
    clause answered by the index alone needs no join to ``resources``.
    """
    direct = None if on_row((clause,)) else _indexed_ids(clause, gate)
    if direct is not None:
        return direct if gate.open else direct.where(gate.ids(resource_type, direct.selected_columns[0]))
    other = resources.alias()
    return (
        select(other.c.id)
        .where(
            other.c.resource_type == resource_type,
            other.c.deleted.is_(False),
            *conditions((clause,), other.c, resource_type, gate),
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
    if param.code in COLUMN_PARAMETERS or param.type == "composite" or clause.modifier in ("missing", "not"):
        return None
    table = INDEX_TABLES[param.type]
    return (
        select(table.c.resource_id)
        .where(
            table.c.param_hash == param.hash,
            table.c.resource_type == param.resource_type,
            or_(*(value_condition(clause, value, table.c) for value in clause.values)),
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
    missing = clause.values[0].missing if isinstance(clause.values[0], MissingSearch) else None
    if param.code in COLUMN_PARAMETERS:
        if missing is not None:
            return false() if missing else true()
        return column_condition(param.code, clause.values, clause.modifier, r)
    if param.type == "composite":
        if missing is not None:
            first = INDEX_TABLES[param.components[0].type].c
            has_rows = r.id.in_(
                select(first.resource_id).where(
                    first.param_hash == param.components[0].hash, first.resource_type == param.resource_type
                )
            )
            return not_(has_rows) if missing else has_rows
        return or_(
            *(r.id.in_(composite_ids(clause, value)) for value in clause.values if isinstance(value, CompositeSearch))
        )
    table = INDEX_TABLES[param.type]
    rows_of_param = (
        select(table.c.resource_id)
        .where(table.c.param_hash == param.hash, table.c.resource_type == param.resource_type)
        .correlate(None)
    )
    if missing is not None:
        has_rows = r.id.in_(rows_of_param)
        return not_(has_rows) if missing else has_rows
    matches = or_(*(value_condition(clause, value, table.c) for value in clause.values))
    return not_(r.id.in_(rows_of_param.where(matches)))  # the :not modifier


def conditions(
    clauses: Sequence[AnyClause], r: Columns = R, resource_type: str | None = None, gate: ReadGate = OPEN
) -> list[ColumnElement[bool]]:
    """The conditions of ANDed ``clauses`` on resource columns ``r``: on the row's own search columns
    where they answer a clause (``app.search.row_conditions``), else through the index tables."""
    answered = on_row(clauses)
    return [
        row_condition(clause, r)
        if index in answered and isinstance(clause, Clause)
        else clause_condition(clause, r, resource_type, gate)
        for index, clause in enumerate(clauses)
    ]


def one_resource_condition(
    clause: AnyClause, resource_type: str, resource_id: ColumnElement[str], r: Columns = R
) -> ColumnElement[bool]:
    """``clause_condition`` for a statement about one resource (``resource_id``): the clause's index
    subquery is restricted to that resource's rows, so it is a probe of the ``(resource_type,
    resource_id)`` index instead of every row of the parameter (which a Subscription's check at
    every write cannot afford; app.subscriptions.matching)."""
    direct = _indexed_ids(clause, OPEN)
    if direct is None:
        return clause_condition(clause, r, resource_type)
    own = direct.selected_columns[0]
    table = own.table
    return r.id.in_(direct.where(table.c.resource_type == resource_type, own == resource_id))


def chain_reaches(clause: ChainClause, targets: Mapping[str, ColumnElement[Any]]) -> ColumnElement[bool]:
    """``clause`` for a resource whose own references through the chain's parameter are known before
    it is stored: ``targets`` gives, per target type, the referenced ids (an array expression); true
    when one of them is a live resource matching the chain's inner clause, as ``clause_condition``
    judges it once the resource's index rows are stored."""
    reached = []
    for target_type, inner in clause.alternatives:
        ids = targets.get(target_type)
        if ids is not None:
            matching = _matching_ids(target_type, inner, OPEN)
            reached.append(exists(matching.where(matching.selected_columns[0] == any_(ids))))
    return or_(false(), *reached)


def referenced_by_matches(
    clause: HasClause, resource_type: str, resource_id: ColumnElement[str]
) -> ColumnElement[bool]:
    """``_has`` for one resource, whether or not it is stored yet: some live ``clause.source_type``
    matching the inner clause references it through the clause's parameter (the other resources'
    index rows are all this needs)."""
    ref = INDEX_TABLES["reference"].c
    sources = select(ref.resource_id).where(
        ref.param_hash == clause.param.hash,
        ref.resource_type == clause.source_type,
        ref.target_type == resource_type,
        ref.target_id == resource_id,
        ref.resource_id.in_(_matching_ids(clause.source_type, clause.inner, OPEN)),
    )
    return exists(sources.correlate(None))


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
    query = query.where(*conditions(request.clauses, R, request.resource_type, gate))
    if request.compartment is not None:
        query = query.where(compartment_condition(request))
    if not gate.open:
        query = query.where(gate.ids(request.resource_type, R.id))
    return query


def matching_ids(request: SearchRequest) -> Select[tuple[str]]:
    """Ids of live resources of the request's type that match its clauses (no gate, no paging): the
    query of a granular SMART scope, as a set a gate narrows to."""
    narrowed = resources.alias("narrowed")
    query = select(narrowed.c.id).where(
        narrowed.c.resource_type == request.resource_type, narrowed.c.deleted.is_(False)
    )
    return query.where(*conditions(request.clauses, narrowed.c, request.resource_type, OPEN))


def sort_expression(key: SortKey) -> ColumnElement[Any]:
    """The value a resource sorts by: lowest for ascending, highest for descending (search.html#_sort)."""
    if key.param.code == "_id":
        return R.id
    if key.param.code == "_lastUpdated":
        return R.last_updated
    table = INDEX_TABLES[key.param.type]
    column = PARAM_TYPES[key.param.type].sort_by(table.c, key.descending)
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
    under concurrent writes without OFFSET. Without ``_sort`` the order is
    the id's alone, and the matches are selected from the resource rows
    directly: the subquery that labels sort values for the outer ORDER BY
    would only cost building (with its column proxies, two fifths of the
    construct's time), as both databases pull such a subquery up into the
    outer query anyway.
    """
    sort_columns = [sort_expression(key).label(f"sort_{i}") for i, key in enumerate(request.sort)]
    matches = _filtered(
        select(R.id, R.body, *sort_columns).where(R.resource_type == request.resource_type, R.deleted.is_(False)),
        request,
        gate,
    )
    if not request.sort:
        if cursor is not None:
            matches = matches.where(_after([], (), [], R.id, cursor[-1]))
        return matches.order_by(R.id).limit(limit)
    inner = matches.subquery()
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
