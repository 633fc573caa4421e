"""Clauses judged in memory on a resource's own index rows agree with the independent oracle of
test_oracle.py, and what only the database can judge is left to it."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from sqlalchemy import and_, not_, or_

from app.main import served_resource_types
from app.search.extraction import Extractor
from app.search.indexing import build_index_rows
from app.search.memory import ClauseCheck, NotInterpretable, _like, clauses_hold, evaluate
from app.search.registry import SearchRegistry, load_registry
from app.search.request import parse_search
from app.storage.index_tables import INDEX_TABLES, IndexRows
from tests.search.test_oracle import clauses, oracle_matches, tasks

REGISTRY: SearchRegistry = load_registry(served_resource_types())
EXTRACTOR = Extractor(REGISTRY)


def rows_of(body: dict[str, Any], resource_id: str = "r1") -> IndexRows:
    resource_type = body["resourceType"]
    return build_index_rows(
        resource_type,
        resource_id,
        EXTRACTOR.extract(resource_type, body),
        EXTRACTOR.extract_composites(resource_type, body),
    )


def holds(body: dict[str, Any], name: str, value: str) -> bool | None:
    request = parse_search(body["resourceType"], [(name, value)], REGISTRY, 20, 100)
    return ClauseCheck.of(request.clauses[0]).holds(rows_of(body))


@settings(max_examples=400, deadline=None)
@given(task=tasks(), clause=clauses)
def test_plain_clauses_agree_with_the_oracle(task: dict[str, Any], clause: tuple[str, str]) -> None:
    verdict = holds(task, *clause)
    assert verdict is not None, f"{clause} should be judged in memory"
    assert verdict == oracle_matches(task, *clause), (task, clause)


PATIENT = {
    "resourceType": "Patient",
    "name": [{"family": "Müller-Lüdenscheidt", "given": ["Renée"]}],
    "identifier": [{"system": "urn:mrn", "value": "42"}],
    "birthDate": "1950-03-04",
    "generalPractitioner": [{"reference": "Practitioner/gp1"}],
}
OBSERVATION = {
    "resourceType": "Observation",
    "status": "final",
    "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
    "subject": {"reference": "Patient/p1"},
    "valueQuantity": {"value": 72.5, "system": "http://unitsofmeasure.org", "code": "/min"},
}


@pytest.mark.parametrize(
    ("body", "name", "value", "expected"),
    [
        (PATIENT, "family", "muller", True),
        (PATIENT, "family", "lüd", False),  # a prefix, not a substring
        (PATIENT, "family:contains", "lüd", True),
        (PATIENT, "family:contains", "l_d", False),  # _ is a character of the value, not a wildcard
        (PATIENT, "family:exact", "Müller-Lüdenscheidt", True),
        (PATIENT, "family:exact", "müller-lüdenscheidt", False),
        (PATIENT, "identifier", "urn:mrn|42", True),
        (PATIENT, "identifier", "urn:other|42", False),
        (PATIENT, "identifier", "|42", False),
        (PATIENT, "birthdate", "1950", True),
        (PATIENT, "birthdate", "gt1950-03-04", False),
        (PATIENT, "birthdate", "lt1951", True),
        (PATIENT, "general-practitioner", "Practitioner/gp1", True),
        (PATIENT, "general-practitioner:Practitioner", "gp1", True),
        (PATIENT, "general-practitioner", "Organization/gp1", False),
        (PATIENT, "gender:missing", "true", True),
        (PATIENT, "gender:missing", "false", False),
        (OBSERVATION, "code", "http://loinc.org|8867-4", True),
        (OBSERVATION, "code:not", "http://loinc.org|8867-4", False),
        (OBSERVATION, "value-quantity", "72.5", True),
        (OBSERVATION, "value-quantity", "gt70|http://unitsofmeasure.org|/min", True),
        (OBSERVATION, "value-quantity", "lt70", False),
        (OBSERVATION, "subject", "Patient/p1", True),
        (OBSERVATION, "subject", "http://elsewhere.org/fhir/Patient/p1", True),
    ],
)
def test_each_parameter_type_is_judged_as_the_database_would(
    body: dict[str, Any], name: str, value: str, expected: bool
) -> None:
    assert holds(body, name, value) is expected


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("subject.name", "smith"),  # a chain needs the target's rows
        ("_has:Observation:patient:code", "1234-5"),
        ("code-value-quantity", "http://loinc.org|8867-4$72.5"),  # composite
        ("_id", "r1"),  # a column of resources
    ],
)
def test_what_needs_other_rows_is_left_to_the_database(name: str, value: str) -> None:
    resource_type = "Patient" if name.startswith("_has") else "Observation"
    body = PATIENT if resource_type == "Patient" else OBSERVATION
    request = parse_search(resource_type, [(name, value)], REGISTRY, 20, 100)
    assert ClauseCheck.of(request.clauses[0]).holds(rows_of(body)) is None


def test_a_failing_clause_decides_and_the_undecided_are_returned() -> None:
    rows = rows_of(OBSERVATION)
    failing = parse_search("Observation", [("status", "preliminary"), ("subject.name", "x")], REGISTRY, 20, 100)
    assert clauses_hold([ClauseCheck.of(c) for c in failing.clauses], rows) == (False, ())
    passing = parse_search("Observation", [("status", "final"), ("subject.name", "x")], REGISTRY, 20, 100)
    decided, undecided = clauses_hold([ClauseCheck.of(c) for c in passing.clauses], rows)
    assert decided is True
    assert [c.name for c in undecided] == ["subject.name"]


def test_sql_three_valued_logic() -> None:
    t = INDEX_TABLES["token"].c
    row = {"system": None, "code": "a"}
    assert evaluate(t.system == "x", row) is None
    assert evaluate(not_(t.system == "x"), row) is None
    assert evaluate(or_(t.system == "x", t.code == "a"), row) is True
    assert evaluate(and_(t.system == "x", t.code == "b"), row) is False
    assert evaluate(t.system.is_(None), row) is True
    assert evaluate(t.code.in_(["a", "b"]), row) is True
    assert evaluate(t.code.not_in(["a", "b"]), row) is False


def test_like_escapes() -> None:
    assert _like("a_b%c", "%\\_b\\%%", "\\")
    assert not _like("axb%c", "%\\_b\\%%", "\\")
    assert _like("anything", "%", None)
    assert _like("ab", "a_", None) and not _like("abc", "a_", None)


def test_an_unknown_construct_is_not_guessed() -> None:
    t = INDEX_TABLES["token"].c
    with pytest.raises(NotInterpretable):
        evaluate(t.code.regexp_match("a.*"), {"code": "abc"})
