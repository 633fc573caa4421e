"""``_include`` and ``_revinclude`` (search.html#include): pure statement builders.

Both walk the reference index: a forward include reads the reference rows of
the page's resources, a reverse include finds resources whose reference rows
point at the page's resources. ``:iterate`` repeats on what was included.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import Select, and_, or_, select

from app.search.request import Include
from app.storage.gate import OPEN, ReadGate
from app.storage.index_tables import INDEX_TABLES
from app.storage.tables import resources

REF = INDEX_TABLES["reference"].c
R = resources.c
MAX_ITERATIONS = 4


def forward_targets(include: Include, source_ids: list[str]) -> Select[str | None, str | None]:
    """(type, id) of what the sources' followed references point at."""
    query = select(REF.target_type, REF.target_id).where(
        REF.param_hash.in_([p.hash for p in include.params]),
        REF.resource_type == include.source_type,
        REF.resource_id.in_(source_ids),
        REF.target_type.is_not(None),
    )
    if include.target_type:
        query = query.where(REF.target_type == include.target_type)
    return query.distinct()


def reverse_sources(include: Include, target_type: str, target_ids: list[str]) -> Select[str, str]:
    """(type, id) of resources of the include's type whose references point at the targets."""
    return (
        select(REF.resource_type, REF.resource_id)
        .where(
            REF.param_hash.in_([p.hash for p in include.params]),
            REF.target_type == target_type,
            REF.target_id.in_(target_ids),
        )
        .distinct()
    )


def load_live(keys: Iterable[tuple[str, str]], gate: ReadGate = OPEN) -> Select[str, str, bytes | None]:
    """Bodies of the live resources among ``keys`` that the gate lets the caller see (grouped by type
    for index use)."""
    by_type: dict[str, list[str]] = {}
    for resource_type, resource_id in keys:
        by_type.setdefault(resource_type, []).append(resource_id)
    conditions = [and_(R.resource_type == t, R.id.in_(ids), gate.ids(t, R.id)) for t, ids in by_type.items()]
    return select(R.resource_type, R.id, R.body).where(or_(*conditions), R.deleted.is_(False))
