"""The row-column conditions of a search: which clauses ``resources.subject_ref`` and
``resources.status_code`` answer, and how (``app.search.row_columns`` says which parameters fill them
and why)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from sqlalchemy import ColumnElement, false

from app.search.registry import SearchParam
from app.search.request import AnyClause, Clause
from app.search.row_columns import RowColumn
from app.search.types.reference import ReferenceSearch
from app.search.types.token import TokenSearch
from app.storage.index_tables import Columns, indexed_text

_NONE: Final = object()  # a value no resource can match through the column (another target type)


def _row_value(param: SearchParam, value: object) -> str | object | None:
    """``value`` as the column stores it; ``_NONE`` when it can match nothing; None when the column
    cannot answer it exactly (the index table must)."""
    if param.row_column == "status":
        if isinstance(value, TokenSearch) and value.text is None and value.system is None:
            return indexed_text(value.code or "")
        return None
    if not isinstance(value, ReferenceSearch) or value.url is not None or value.target_id is None:
        return None
    target_type = value.target_type or param.row_target
    if target_type is None:  # a bare id on a parameter that may point at several types
        return None
    if param.row_target is not None and target_type != param.row_target:
        return _NONE
    return f"{target_type}/{indexed_text(value.target_id)}"


def _answerable(clause: AnyClause) -> RowColumn | None:
    if not isinstance(clause, Clause) or clause.param.row_column is None:
        return None
    if clause.modifier is not None and not clause.modifier[:1].isupper():  # :missing, :not, :text ...
        return None
    if any(_row_value(clause.param, value) is None for value in clause.values):
        return None
    return clause.param.row_column


def on_row(clauses: Sequence[AnyClause]) -> frozenset[int]:
    """Positions of the clauses (ANDed) that the row columns answer: every subject clause they can
    answer, and status clauses only beside one of those (see the module docstring)."""
    columns = [_answerable(clause) for clause in clauses]
    if "subject" not in columns:
        return frozenset()
    return frozenset(i for i, column in enumerate(columns) if column is not None)


def row_condition(clause: Clause, r: Columns) -> ColumnElement[bool]:
    """A clause ``on_row`` chose, on the row columns of ``r`` (the resources table or an alias)."""
    column = r.subject_ref if clause.param.row_column == "subject" else r.status_code
    keys = [key for key in (_row_value(clause.param, v) for v in clause.values) if isinstance(key, str)]
    if not keys:
        return false()
    return column == keys[0] if len(keys) == 1 else column.in_(keys)
