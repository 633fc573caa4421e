"""Filing subscriptions under an anchor never hides one that matches, and skips those that cannot."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from app.search.memory import ClauseCheck, clauses_hold
from app.search.request import parse_search
from app.subscriptions.chains import references_of
from app.subscriptions.definition import SubscriptionDefinition
from app.subscriptions.matching import (
    OUTBOX,
    TypeIndex,
    anchor,
    bind_references,
    merge_chains,
    prewrite_values,
    with_database_check,
)
from tests.search.test_memory import REGISTRY, rows_of
from tests.search.test_oracle import clauses, tasks


def definition(number: int, pairs: list[tuple[str, str]]) -> SubscriptionDefinition:
    request = parse_search("Task", pairs, REGISTRY, 1, 1, strict=True)
    checks = tuple(ClauseCheck.of(clause) for clause in request.clauses)
    return SubscriptionDefinition(f"s{number}", "active", request, "rest-hook", "", False, (), None, checks)


@settings(max_examples=200, deadline=None)
@given(task=tasks(), criteria=st.lists(st.lists(clauses, min_size=1, max_size=3), min_size=1, max_size=12))
def test_every_matching_subscription_is_a_candidate(
    task: dict[str, Any], criteria: list[list[tuple[str, str]]]
) -> None:
    definitions = [definition(n, pairs) for n, pairs in enumerate(criteria)]
    rows = rows_of(task)
    matching = {d.id for d in definitions if clauses_hold(d.checks, rows) == (True, ())}
    candidates = {d.id for d in TypeIndex(definitions).candidates(rows)}
    assert matching <= candidates


def test_subscriptions_of_other_owners_are_not_even_candidates() -> None:
    definitions = [definition(n, [("owner", f"Practitioner/n{n}"), ("status", "requested")]) for n in range(500)]
    definitions.append(definition(500, [("status", "requested")]))  # no reference: filed under its token
    index = TypeIndex(definitions)
    task = {"resourceType": "Task", "status": "requested", "intent": "order", "owner": {"reference": "Practitioner/n7"}}
    assert sorted(d.id for d in index.candidates(rows_of(task))) == ["s500", "s7"]


def test_what_has_no_single_equality_has_no_anchor() -> None:
    request = parse_search(
        "Task",
        [
            ("status", "requested,accepted"),
            ("status:not", "cancelled"),
            ("authored-on", "ge2026"),
            ("owner:missing", "true"),
        ],
        REGISTRY,
        1,
        1,
    )
    assert [anchor(clause) for clause in request.clauses] == [None, None, None, None]


def test_before_the_write_chains_take_their_targets_from_the_rows_and_other_clauses_wait() -> None:
    task = {"resourceType": "Task", "status": "requested", "intent": "order", "owner": {"reference": "Practitioner/n7"}}
    chained = parse_search("Task", [("owner:Practitioner.name", "osei")], REGISTRY, 1, 1).clauses
    values: dict[str, object] = {}
    assert prewrite_values(chained, references_of(rows_of(task)), "s", values)
    assert values == {"s.via.owner.Practitioner": ["n7"]}
    has = parse_search("Task", [("_has:Task:part-of:status", "ready")], REGISTRY, 1, 1).clauses
    assert prewrite_values(has, references_of(rows_of(task)), "s", values)  # _has needs only the written id
    assert values == {"s.via.owner.Practitioner": ["n7"]}
    missing = parse_search("Task", [("owner:missing", "true")], REGISTRY, 1, 1).clauses
    assert not prewrite_values(missing, references_of(rows_of(task)), "s", {})  # the resource's own stored rows decide


def test_subscriptions_chaining_through_one_parameter_share_its_targets() -> None:
    """However many subscriptions chain through ``owner``, a write binds the owner's ids once."""
    task = {"resourceType": "Task", "status": "requested", "intent": "order", "owner": {"reference": "Practitioner/n7"}}
    values: dict[str, object] = {}
    for n in range(5):
        chained = parse_search("Task", [("owner.name", f"nobody-{n}")], REGISTRY, 1, 1).clauses
        assert prewrite_values(chained, references_of(rows_of(task)), "s", values)
    assert values == {  # the types that have a ``name`` parameter, each bound once
        "s.via.owner.Practitioner": ["n7"],
        "s.via.owner.Organization": [],
        "s.via.owner.Patient": [],
        "s.via.owner.HealthcareService": [],
        "s.via.owner.RelatedPerson": [],
    }


def test_lone_chains_of_one_family_are_merged_into_one_chain_of_all_their_values() -> None:
    """A veto probes the written resource's targets once for all subscriptions ``Task?owner.name=...``:
    values of one clause are ORed (search.html#combining)."""

    def clauses(*pairs: tuple[str, str]) -> tuple[Any, ...]:
        return parse_search("Task", list(pairs), REGISTRY, 1, 1).clauses

    conjunctions = [
        clauses(("patient.family", "doe")),
        clauses(("patient.family:exact", "Roe")),  # another modifier: another family
        clauses(("patient.family", "roe,poe")),
        clauses(("patient.gender:not", "male")),  # a negation is not an OR of values
        clauses(("patient.family", "doe"), ("status", "ready")),  # not a lone chain
        clauses(("patient.family", "moe")),
    ]
    assert [" ".join(c.sexp() for c in merged) for merged in merge_chains(conjunctions)] == [
        "(chain Task.patient (Patient (or (string Patient.family doe) (string Patient.family roe)"
        " (string Patient.family poe) (string Patient.family moe))))",
        "(chain Task.patient (Patient (string:exact Patient.family Roe)))",
        "(chain Task.patient (Patient (token:not Patient.gender male)))",
        "(chain Task.patient (Patient (string Patient.family doe))) (token Task.status ready)",
    ]
    assert merge_chains(conjunctions[:1]) == conjunctions[:1]  # alone, unchanged


def test_what_memory_leaves_of_criteria_it_cannot_judge_at_all_is_known_before_any_write() -> None:
    """A subscription none of whose clauses memory can judge (``owner.name=osei``) carries, from parsing,
    what every write leaves of it and what its veto binds: the same as judging and binding it per write."""
    task = {"resourceType": "Task", "status": "requested", "intent": "order", "owner": {"reference": "Practitioner/n7"}}
    rows = rows_of(task)
    chained = with_database_check(definition(1, [("owner.name", "osei"), ("_has:Task:part-of:status", "ready")]))
    assert chained.unjudged is not None and chained.prewrite is not None
    assert clauses_hold(chained.checks, rows) == (True, chained.unjudged)
    per_write: dict[str, object] = {}
    assert prewrite_values(chained.unjudged, references_of(rows), OUTBOX, per_write)
    known: dict[str, object] = {}
    bind_references(chained.prewrite, references_of(rows), known)
    assert known == per_write and known["outbox.via.owner.Practitioner"] == ["n7"]

    mixed = with_database_check(definition(2, [("owner.name", "osei"), ("status", "requested")]))
    assert mixed.unjudged is None  # the status is judged at each write
