"""Search values kept on the resource's own row: its subject and its status.

Most care-coordination searches ask for one patient's resources of one type,
often in one status (``CarePlan?subject=Patient/X&status=active``, a SMART
app's ``Task?patient=X``). Through the index tables that is two index range
scans joined with a primary-key probe per candidate; one B-tree over columns
of the resource row answers it with a single range scan, which is the layout
Medplum uses (a column per search parameter, on a table per type) and halved
PostgreSQL's CPU per search in ``bench.search_shapes`` (BENCHMARKS.md,
"Search: which plan shapes could reach 0.2 ms").

Per resource type two parameters qualify, each only when its expression is a
plain path to an element that cannot repeat (``capability/elements.json``),
so that a resource has at most one value: the reference parameter
``subject`` (else ``patient``: ``AllergyIntolerance.patient``), stored as
``Type/id`` in ``resources.subject_ref``, and the token parameter
``status``, whose code is stored in ``resources.status_code``. Parameters
that narrow the same path to one target type (``patient`` =
``CarePlan.subject.where(resolve() is Patient)``) read the same column.

The index tables keep every row, so nothing else changes: chains, ``_has``,
includes, ``:missing``, ``:not``, ``system|code``, absolute URLs and a bare id
on a parameter that may point at several types are answered there. The
compiler reads a column only for what it answers exactly (``row_condition``),
and the status column only beside a subject condition, the leading column of
the ``(resource_type, subject_ref, status_code, id)`` index: alone, the
status is a range scan of its index table, not a scan of every row of the
type.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING, Final, Literal

from app.storage.row_keys import RowKeyRule

if TYPE_CHECKING:
    from app.search.registry import SearchParam

RowColumn = Literal["subject", "status"]

_PLAIN = re.compile(r"^(?P<type>[A-Z][A-Za-z]*)\.(?P<element>[a-z][A-Za-z]*)$")
_NARROWED = re.compile(r"^(?P<path>[A-Z][A-Za-z]*\.[a-z][A-Za-z]*)\.where\(resolve\(\) is (?P<target>[A-Za-z]+)\)$")
# per column: the parameter codes that may fill it, in order of preference, and the element type they need
_SOURCES: Final[dict[RowColumn, tuple[tuple[str, ...], str, str]]] = {
    "subject": (("subject", "patient"), "reference", "Reference"),
    "status": (("status",), "token", "code"),
}


@cache
def _elements() -> Mapping[str, Mapping[str, list[object]]]:
    raw: dict[str, dict[str, dict[str, list[object]]]] = json.loads(
        resources.files("capability").joinpath("elements.json").read_bytes()
    )
    return raw["types"]


def _single_element(expression: str | None, element_type: str) -> bool:
    """``Type.element`` naming one element of ``element_type`` that cannot repeat."""
    match = _PLAIN.match(expression or "")
    if match is None:
        return False
    shape = _elements().get(match.group("type"), {}).get(match.group("element"))
    return shape is not None and shape[0] == element_type and shape[1] is False


def row_parameters(params: Mapping[str, SearchParam]) -> dict[str, tuple[RowColumn, str | None]]:
    """For one type's parameters (by code): which read a row column, as (column, the target type the
    parameter narrows the column's references to, or None)."""
    chosen: dict[str, tuple[RowColumn, str | None]] = {}
    for column, (codes, param_type, element_type) in _SOURCES.items():
        source = next(
            (
                params[code]
                for code in codes
                if code in params
                and params[code].type == param_type
                and _single_element(params[code].expression, element_type)
            ),
            None,
        )
        if source is None or (column == "status" and not chosen):
            continue  # (the status column is read only beside the subject's: no subject, no status)
        chosen[source.code] = (column, None)
        for param in params.values():
            narrowed = _NARROWED.match(param.expression or "")
            if param.type == param_type and narrowed and narrowed.group("path") == source.expression:
                chosen[param.code] = (column, narrowed.group("target"))
    return chosen


def row_key_rule(params: Mapping[str, SearchParam]) -> RowKeyRule:
    """Which index rows of a type fill its row columns: those of each column's source parameter."""
    hashes: dict[str, int] = {}
    for param in params.values():
        if param.row_column is not None and param.row_target is None:
            hashes[param.row_column] = param.hash
    return RowKeyRule(hashes.get("subject"), hashes.get("status"))
