"""Which parameters the resource row itself answers (``resources.subject_ref``, ``resources.status_code``)
and the SQL the compiler builds with them, per dialect, without a database.

The answers are checked by the oracle (test_oracle.py) and the HTTP tests;
the row values a write stores by tests/storage/test_row_keys.py.
"""

from __future__ import annotations

import re

import pytest
from sqlalchemy.engine import Dialect

from app.search.compiler import compile_count, compile_search
from app.search.registry import SearchRegistry
from app.search.request import parse_search
from app.storage.index_tables import INDEX_TABLES
from tests.search.conftest import DIALECTS


def where(registry: SearchRegistry, dialect: Dialect, resource_type: str, *pairs: tuple[str, str]) -> str:
    """The search's WHERE clause as the dialect renders it, with values inline."""
    request = parse_search(resource_type, list(pairs), registry, 20, 100)
    compiled = compile_search(request, None, 21).compile(dialect=dialect, compile_kwargs={"literal_binds": True})
    text = re.sub(r"\s+", " ", str(compiled))
    return text.split(" WHERE ", 1)[1].split(" ORDER BY ", 1)[0]


def row_parameters(registry: SearchRegistry, resource_type: str) -> dict[str, tuple[str | None, str | None]]:
    return {p.code: (p.row_column, p.row_target) for p in registry.for_type(resource_type).values() if p.row_column}


@pytest.mark.parametrize(
    ("resource_type", "expected"),
    [
        # subject, and patient: the same element narrowed to Patient references
        (
            "CarePlan",
            {"subject": ("subject", None), "patient": ("subject", "Patient"), "status": ("status", None)},
        ),
        ("Task", {"subject": ("subject", None), "patient": ("subject", "Patient"), "status": ("status", None)}),
        # Goal's status parameter is lifecycle-status: only the subject is on the row
        ("Goal", {"subject": ("subject", None), "patient": ("subject", "Patient")}),
        # no subject parameter: patient (a plain path) fills the column
        ("AllergyIntolerance", {"patient": ("subject", None)}),
        # Appointment.participant.actor repeats: no subject column, and so no status column either
        ("Appointment", {}),
        ("Patient", {}),
    ],
)
def test_the_parameters_a_row_carries_are_single_valued_subjects_and_statuses(
    registry: SearchRegistry, resource_type: str, expected: dict[str, tuple[str | None, str | None]]
) -> None:
    assert row_parameters(registry, resource_type) == expected


def test_the_write_rule_names_the_source_parameters(registry: SearchRegistry) -> None:
    rule = registry.row_key_rule("CarePlan")
    assert rule.subject_hash == registry.get("CarePlan", "subject").hash  # type: ignore[union-attr]
    assert rule.status_hash == registry.get("CarePlan", "status").hash  # type: ignore[union-attr]
    allergy = registry.row_key_rule("AllergyIntolerance")
    assert allergy.subject_hash == registry.get("AllergyIntolerance", "patient").hash  # type: ignore[union-attr]
    assert allergy.status_hash is None
    assert registry.row_key_rule("Patient").subject_hash is None


def test_a_patients_plans_in_one_status_are_one_range_scan_of_the_row(registry: SearchRegistry) -> None:
    pg = where(registry, DIALECTS["postgresql"], "CarePlan", ("subject", "Patient/p1"), ("status", "active"))
    assert pg == (
        "resources.resource_type = 'CarePlan' AND resources.deleted IS false"
        " AND resources.subject_ref = 'Patient/p1' AND resources.status_code = 'active'"
    )
    lite = where(registry, DIALECTS["sqlite"], "CarePlan", ("subject", "Patient/p1"), ("status", "active"))
    assert lite == (
        "resources.resource_type = 'CarePlan' AND resources.deleted IS 0"
        " AND resources.subject_ref = 'Patient/p1' AND resources.status_code = 'active'"
    )


@pytest.mark.parametrize(
    ("pairs", "fragment"),
    [
        ((("patient", "p1"),), "resources.subject_ref = 'Patient/p1'"),  # patient narrows to Patient
        ((("subject:Patient", "p1"),), "resources.subject_ref = 'Patient/p1'"),
        ((("patient", "Patient/p1,Patient/p2"),), "resources.subject_ref IN ('Patient/p1', 'Patient/p2')"),
        (
            (("subject", "Patient/p1"), ("status", "active,completed")),
            "resources.status_code IN ('active', 'completed')",
        ),
        # a Group is never a patient: nothing matches
        ((("patient", "Group/g1"),), "false"),
    ],
)
def test_what_the_row_answers(registry: SearchRegistry, dialect: Dialect, pairs, fragment: str) -> None:  # type: ignore[no-untyped-def]
    text = where(registry, dialect, "CarePlan", *pairs).replace("0 = 1", "false")  # SQLite's false
    assert fragment in text
    assert "idx_" not in text


@pytest.mark.parametrize(
    ("pairs", "table"),
    [
        # the status alone: its index table's range scan, not every CarePlan row
        ((("status", "active"),), "idx_token"),
        # a bare id on a parameter that may point at a Patient or a Group
        ((("subject", "p1"),), "idx_reference"),
        # an absolute reference, an identifier, :missing: only the index rows know
        ((("subject", "http://other.example/fhir/Patient/p1"),), "idx_reference"),
        ((("subject:identifier", "urn:mrn|123"),), "idx_reference"),
        ((("subject:missing", "true"),), "idx_reference"),
        # status with a system, and :not, beside a subject the row answers
        ((("subject", "Patient/p1"), ("status", "http://hl7.org/fhir/request-status|active")), "idx_token"),
        ((("subject", "Patient/p1"), ("status:not", "active")), "idx_token"),
        # a chain stays a join of reference rows
        ((("subject.name", "Okafor"),), "idx_reference"),
    ],
)
def test_what_the_index_tables_still_answer(registry: SearchRegistry, dialect: Dialect, pairs, table: str) -> None:  # type: ignore[no-untyped-def]
    assert f"{table}." in where(registry, dialect, "CarePlan", *pairs)


def test_a_subject_clause_beside_an_unanswerable_status_still_reads_the_row(registry: SearchRegistry) -> None:
    text = where(registry, DIALECTS["sqlite"], "CarePlan", ("subject", "Patient/p1"), ("status:not", "active"))
    assert "resources.subject_ref = 'Patient/p1'" in text
    assert "idx_reference" not in text


def test_counts_use_the_same_conditions(registry: SearchRegistry, dialect: Dialect) -> None:
    request = parse_search("Task", [("patient", "Patient/p1"), ("status", "requested")], registry, 20, 100)
    text = str(compile_count(request).compile(dialect=dialect, compile_kwargs={"literal_binds": True}))
    assert "resources.subject_ref = 'Patient/p1'" in text and "resources.status_code = 'requested'" in text
    assert not any(f"{table.name}." in text for table in INDEX_TABLES.values())
