"""Which subscriptions could match a write, found without looking at most of them.

A deployment has many Subscriptions on one type that differ only in a value
(``CarePlan?subject=Patient/123``, ``Task?owner=Practitioner/9``): judging
each at every write would cost a little per subscription and a lot in
total. So each subscription is filed under an **anchor**: one clause of its
criteria that is a plain equality on a reference (``subject=Patient/123``)
or a token (``code=http://loinc.org|1234-5``), which any matching resource
must have an index row for. A write looks up only the subscriptions filed
under the keys its own index rows carry, plus those without an anchor, and
judges those in full (``app.search.memory``, then the database for what is
left). References are preferred as anchors: they are the selective ones.
"""

from __future__ import annotations

from collections.abc import Container, Iterable, Sequence
from dataclasses import replace
from typing import Any

from sqlalchemy import ColumnElement, Select, String, Text, and_, bindparam, exists, literal, or_, select
from sqlalchemy.dialects.postgresql import ARRAY

from app.search.compiler import chain_reaches, one_resource_condition, referenced_by_matches
from app.search.request import AnyClause, ChainClause, Clause, HasClause
from app.search.types.reference import ReferenceSearch
from app.search.types.token import TokenSearch
from app.storage.gate import ReadGate
from app.storage.index_tables import IndexRows, indexed_text
from app.storage.tables import resources
from app.subscriptions.chains import References, chain_checks
from app.subscriptions.definition import SubscriptionDefinition

Key = tuple[object, ...]


def anchor(clause: AnyClause) -> Key | None:
    """The index key every resource matching ``clause`` has a row for, when there is a single one."""
    if not isinstance(clause, Clause) or len(clause.values) != 1:
        return None
    value, param, modifier = clause.values[0], clause.param, clause.modifier
    if isinstance(value, ReferenceSearch) and (modifier is None or modifier[:1].isupper()):
        if value.url is None and value.target_id is not None:
            return ("reference", param.hash, value.target_type, indexed_text(value.target_id))
        return None
    if isinstance(value, TokenSearch) and modifier is None and value.text is None and value.code is not None:
        system = None if value.system is None else value.system and indexed_text(value.system)
        return ("token", param.hash, system, indexed_text(value.code))
    return None


def row_keys(rows: IndexRows, params: Container[object]) -> set[Key]:
    """The anchor keys the rows of one resource satisfy, of the parameters (by hash) that some
    subscription is anchored on (a resource has dozens of rows, a type's subscriptions few anchoring
    parameters)."""
    keys: set[Key] = set()
    for row in rows.get("reference", ()):
        param = row["param_hash"]
        if row["target_id"] is not None and param in params:
            keys.add(("reference", param, None, row["target_id"]))
            keys.add(("reference", param, row["target_type"], row["target_id"]))
    for row in rows.get("token", ()):
        param = row["param_hash"]
        if row["code"] is not None and param in params:
            keys.add(("token", param, None, row["code"]))
            keys.add(("token", param, row["system"] if row["system"] is not None else "", row["code"]))
    return keys


class TypeIndex:
    """The subscriptions on one resource type, filed by anchor."""

    def __init__(self, definitions: Iterable[SubscriptionDefinition]) -> None:
        self.anchored: dict[Key, list[SubscriptionDefinition]] = {}
        self.unanchored: list[SubscriptionDefinition] = []
        for definition in definitions:
            clauses = definition.criteria.clauses
            keys = [anchor(c) for c in clauses if c.param.type == "reference"]
            keys += [anchor(c) for c in clauses if c.param.type == "token"]
            key = next((k for k in keys if k is not None), None)
            if key is None:
                self.unanchored.append(definition)
            else:
                self.anchored.setdefault(key, []).append(definition)
        self.params: frozenset[object] = frozenset(key[1] for key in self.anchored)  # anchoring parameters' hashes

    def candidates(self, rows: IndexRows) -> list[SubscriptionDefinition]:
        found = list(self.unanchored)
        if self.anchored:
            for key in row_keys(rows, self.params):
                found += self.anchored.get(key, ())
        return found


R = resources.c


def database_check(
    subscription_id: str, resource_type: str, clauses: Iterable[AnyClause], owner: ReadGate
) -> Select[Any]:
    """``clauses`` and the owner's read gate as one ``EXISTS`` on the written resource (bound as ``rt``
    and ``rid``), selecting the subscription's id when it holds (so that many checks make one
    ``UNION ALL``)."""
    conditions = [one_resource_condition(clause, resource_type, bindparam("rid")) for clause in clauses]
    if not owner.open:
        conditions.append(owner.ids(resource_type, R.id))
    return select(literal(subscription_id).label("subscription_id")).where(
        exists(
            select(R.id).where(
                R.resource_type == bindparam("rt"), R.id == bindparam("rid"), R.deleted.is_(False), *conditions
            )
        )
    )


def with_database_check(definition: SubscriptionDefinition) -> SubscriptionDefinition:
    """``definition`` with its ``database_check`` built once (the clauses its index rows cannot settle
    and its owner's read gate), so that a write only runs it, and with its ``chains`` when those
    clauses are chains judged on the targets' rows (``app.subscriptions.chains``)."""
    residual = [check.clause for check in definition.checks if check.conditions is None]
    if not residual and definition.owner.open:
        return definition
    check = database_check(definition.id, definition.resource_type, residual, definition.owner)
    chains = chain_checks(residual) if definition.owner.open else None
    unjudged = tuple(residual) if len(residual) == len(definition.checks) else None
    binds = prewrite_binds(unjudged, OUTBOX) if unjudged is not None else None
    return replace(definition, database_check=check, chains=chains, unjudged=unjudged, prewrite=binds)


# what a write's statement names the values of its veto under (``app.subscriptions.settled``)
OUTBOX = "outbox"
# what ``prewrite_condition`` binds: (bind name, the chain parameter's (hash, type), target type)
Binds = tuple[tuple[str, tuple[int, str], str], ...]


def prewrite_binds(clauses: Iterable[AnyClause], prefix: str) -> Binds | None:
    """The values ``prewrite_condition`` binds for ``clauses``: per chain parameter and target type, the
    written resource's own references through it (named under ``prefix``: every subscription chaining
    through one parameter shares the one value, so a write sends it once however many such
    subscriptions it meets). None when a clause cannot be judged before the write: it needs the
    resource's own stored rows (composites, ``:missing``, ``:not`` ...)."""
    binds: list[tuple[str, tuple[int, str], str]] = []
    for clause in clauses:
        if isinstance(clause, ChainClause):
            via = (clause.param.hash, clause.param.resource_type)
            for target_type, _ in clause.alternatives:
                binds.append((_targets_name(prefix, clause, target_type), via, target_type))
        elif not isinstance(clause, HasClause):
            return None
    return tuple(binds)


def bind_references(binds: Binds, references: References, into: dict[str, object]) -> None:
    """Add to ``into`` the values of ``binds`` for a resource about to be written whose references are
    ``references`` (``chains.references_of`` its index rows, filed once for all its subscriptions)."""
    for name, key, target_type in binds:
        if name not in into:
            into[name] = sorted(references.get(key, {}).get(target_type, ()))


def prewrite_values(clauses: Iterable[AnyClause], references: References, prefix: str, into: dict[str, object]) -> bool:
    """``bind_references`` of the ``prewrite_binds`` of ``clauses``; False when they cannot be judged
    before the write."""
    binds = prewrite_binds(clauses, prefix)
    if binds is None:
        return False
    bind_references(binds, references, into)
    return True


def _targets_name(prefix: str, clause: ChainClause, target_type: str) -> str:
    """The bind name of the written resource's references of ``target_type`` through the chain's
    parameter (a parameter's code is unique within the written type, which the statement's shape holds)."""
    return f"{prefix}.via.{clause.param.code}.{target_type}"


def prewrite_condition(clauses: Iterable[AnyClause], resource_type: str, prefix: str) -> ColumnElement[bool]:
    """Chains and ``_has`` (what memory leaves of a subscription's criteria) for a resource about to be
    written, as a condition on stored resources only: a chain's targets are the resource's own
    references, bound by ``prewrite_values``; ``_has`` looks for resources referencing the written id
    (bound as ``outbox.rid``). Built only when a statement of this shape is first compiled."""
    conditions: list[ColumnElement[bool]] = []
    for clause in clauses:
        if isinstance(clause, ChainClause):
            targets: dict[str, ColumnElement[object]] = {
                target_type: bindparam(_targets_name(prefix, clause, target_type), type_=ARRAY(Text()))
                for target_type, _ in clause.alternatives
            }
            conditions.append(chain_reaches(clause, targets))
        elif isinstance(clause, HasClause):
            conditions.append(referenced_by_matches(clause, resource_type, bindparam("outbox.rid", type_=String())))
    return and_(*conditions)


def prewrite_veto(
    conjunctions: Sequence[tuple[AnyClause, ...]], resource_type: str, prefix: str
) -> ColumnElement[bool]:
    """Whether one of ``conjunctions`` (each what memory leaves of one subscription's criteria) may hold
    for a resource about to be written: the OR of their ``prewrite_condition``s, with the lone chains
    that differ only in their inner values merged first (``merge_chains``), so that ten subscriptions
    ``CarePlan?subject.family=...`` probe the written resource's targets once, not ten times."""
    return or_(*(prewrite_condition(clauses, resource_type, prefix) for clauses in merge_chains(conjunctions)))


def merge_chains(conjunctions: Sequence[tuple[AnyClause, ...]]) -> list[tuple[AnyClause, ...]]:
    """``conjunctions``, ORed, with those that are one chain through the same parameter to the same
    inner parameters (and modifiers) merged into one chain whose inner clauses carry all their values:
    values of one clause are ORed (search.html#combining), so ``a.b=x`` or ``a.b=y`` is ``a.b=x,y``.
    Inner clauses under ``:not`` or ``:missing`` are kept apart, as are conjunctions of several
    clauses; the order of first appearance is kept (it is part of the statement's shape)."""
    merged: dict[Key, int] = {}
    result: list[tuple[AnyClause, ...]] = []
    for clauses in conjunctions:
        family = _chain_family(clauses)
        if family is None or family not in merged:
            if family is not None:
                merged[family] = len(result)
            result.append(clauses)
            continue
        position = merged[family]
        known, chain = result[position][0], clauses[0]
        assert isinstance(known, ChainClause) and isinstance(chain, ChainClause)
        result[position] = (_with_values_of(known, chain),)
    return result


def _chain_family(clauses: tuple[AnyClause, ...]) -> Key | None:
    """What lone chains must share to be merged (``merge_chains``); None when ``clauses`` are not one."""
    if len(clauses) != 1 or not isinstance(clauses[0], ChainClause):
        return None
    chain = clauses[0]
    family: list[object] = [chain.param.resource_type, chain.param.code]
    for target_type, inner in chain.alternatives:
        if not isinstance(inner, Clause) or inner.modifier in ("not", "missing"):
            return None
        family += [target_type, inner.param.resource_type, inner.param.code, inner.modifier]
    return tuple(family)


def _with_values_of(chain: ChainClause, other: ChainClause) -> ChainClause:
    """``chain`` whose inner clauses also hold the values of ``other``'s (of the same family)."""
    alternatives: list[tuple[str, AnyClause]] = []
    for (target_type, inner), (_, more) in zip(chain.alternatives, other.alternatives, strict=True):
        assert isinstance(inner, Clause) and isinstance(more, Clause)
        values, raw = inner.values + more.values, f"{inner.raw},{more.raw}"
        alternatives.append((target_type, replace(inner, values=values, raw=raw)))
    return replace(chain, alternatives=tuple(alternatives), raw=f"{chain.raw},{other.raw}")
