"""The search parser: query strings become typed trees, printed as s-expressions; every malformed
value is a 400 from the parser, before any SQL exists."""

from __future__ import annotations

import pytest

from app.errors import InvalidRequest
from app.search.registry import SearchRegistry
from app.search.request import SearchRequest, parse_search


def parsed(registry: SearchRegistry, resource_type: str, query: str, strict: bool = False) -> SearchRequest:
    pairs = [tuple(part.split("=", 1)) for part in query.split("&")] if query else []
    return parse_search(resource_type, pairs, registry, 20, 100, strict)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("resource_type", "query", "tree"),
    [
        (
            "Task",
            "status=requested&owner=Practitioner/1",
            "(and (token Task.status requested) (reference Task.owner Practitioner/1))",
        ),
        ("Task", "", "(all)"),
        ("Task", "status=requested,accepted", "(or (token Task.status requested) (token Task.status accepted))"),
        ("Task", "status:not=cancelled", "(token:not Task.status cancelled)"),
        ("Task", "owner:missing=true", "(missing Task.owner true)"),
        ("Patient", "identifier=urn:mrn|42", "(token Patient.identifier urn:mrn|42)"),
        ("Patient", "identifier=|42", "(token Patient.identifier |42)"),
        ("Patient", "identifier=urn:mrn|", "(token Patient.identifier urn:mrn|)"),
        ("Patient", "identifier=a\\|b", "(token Patient.identifier a|b)"),
        ("Patient", "name=Renée", "(string Patient.name Renée)"),
        ("Patient", "name:exact=Van Damme", '(string:exact Patient.name "Van Damme")'),
        (
            "CarePlan",
            "date=ge2026-01-01",
            "(date CarePlan.date ge 2026-01-01T00:00:00.000000Z/2026-01-01T23:59:59.999999Z)",
        ),
        (
            "CarePlan",
            "date=2026-03-05T10:00:00+02:00",
            "(date CarePlan.date eq 2026-03-05T08:00:00.000000Z/2026-03-05T08:00:00.999999Z)",
        ),
        ("RiskAssessment", "probability=gt0.80", "(number RiskAssessment.probability gt 0.80)"),
        (
            "Observation",
            "value-quantity=le5.4|http://unitsofmeasure.org|mg",
            "(quantity Observation.value-quantity le 5.4|http://unitsofmeasure.org|mg)",
        ),
        ("Observation", "value-quantity=5", "(quantity Observation.value-quantity eq 5)"),
        ("CarePlan", "subject:Patient=p1", "(reference CarePlan.subject Patient/p1)"),
        ("CarePlan", "subject=p1", "(reference CarePlan.subject p1)"),
        (
            "CarePlan",
            "subject:identifier=urn:mrn|7",
            "(reference:identifier CarePlan.subject urn:mrn|7)",
        ),
        (
            "CarePlan",
            "subject=http://other.example/fhir/Patient/9",
            "(reference CarePlan.subject http://other.example/fhir/Patient/9)",
        ),
        ("ValueSet", "url:below=http://acme.org/fhir", "(uri:below ValueSet.url http://acme.org/fhir)"),
        ("Task", "_id=a,b", "(or (_id Task._id a) (_id Task._id b))"),
        (
            "Task",
            "_lastUpdated=lt2026",
            "(_lastUpdated Task._lastUpdated lt 2026-01-01T00:00:00.000000Z/2026-12-31T23:59:59.999999Z)",
        ),
        (
            "Task",
            "owner:Practitioner.name=osei",
            "(chain Task.owner (Practitioner (string Practitioner.name osei)))",
        ),
        (
            "Patient",
            "_has:Task:patient:status=requested",
            "(has Task.patient (token Task.status requested))",
        ),
        (
            "Observation",
            "code-value-quantity=http://loinc.org|8480-6$gt140",
            "(composite Observation.code-value-quantity (http://loinc.org|8480-6 gt 140))",
        ),
    ],
)
def test_queries_print_as_typed_trees(registry: SearchRegistry, resource_type: str, query: str, tree: str) -> None:
    assert parsed(registry, resource_type, query).sexp() == tree


def test_a_compartment_is_part_of_the_tree(registry: SearchRegistry) -> None:
    request = parse_search("CarePlan", [("status", "active")], registry, 20, 100, compartment=("Patient", "p1"))
    assert request.sexp() == "(and (token CarePlan.status active) (compartment Patient/p1))"


def test_a_chain_without_a_type_searches_every_target_that_has_the_parameter(registry: SearchRegistry) -> None:
    # CarePlan.subject points to Patient or Group; Group has no name parameter, so only Patient is followed
    assert parsed(registry, "CarePlan", "subject.name=rivera").sexp() == (
        "(chain CarePlan.subject (Patient (string Patient.name rivera)))"
    )
    assert parsed(registry, "CarePlan", "subject.identifier=urn:x|1").sexp() == (
        "(chain CarePlan.subject (Group (token Group.identifier urn:x|1)) (Patient (token Patient.identifier urn:x|1)))"
    )


@pytest.mark.parametrize(
    ("resource_type", "query", "message"),
    [
        ("CarePlan", "date=2026-13-01", "date=2026-13-01: not a valid date"),
        ("CarePlan", "date=gt", "date=gt: not a valid date"),
        ("CarePlan", "date=\u0662\u0660\u0662\u0666", "not a valid date"),  # Arabic-Indic digits
        ("RiskAssessment", "probability=0x10", "probability=0x10: not a number"),
        ("RiskAssessment", "probability=1e400", "outside the supported range"),
        ("Observation", "value-quantity=5|mg", "a quantity is [prefix]number or [prefix]number|system|code"),
        ("Observation", "code-value-quantity=http://loinc.org|8480-6", "has 2 parts separated by '$'"),
        ("Observation", "code-value-quantity=$5", "part 1 of the composite value is empty"),
        ("Observation", "code-value-quantity=a$five", "not a number"),
        ("Task", "owner:missing=maybe", "owner:missing must be true or false"),
        ("Task", "status:exact=x", "modifier ':exact' is not supported for parameter 'status'"),
        ("Task", "status=", "parameter 'status' has no value"),
        ("Task", "owner:Patient.birthdate=notadate", "not a valid date"),
        ("Patient", "_has:Task:patient:authored-on=yesterday", "not a valid date"),
    ],
)
def test_malformed_values_are_refused_by_the_parser(
    registry: SearchRegistry, resource_type: str, query: str, message: str
) -> None:
    with pytest.raises(InvalidRequest) as refused:
        parsed(registry, resource_type, query)
    assert message in refused.value.message
    assert refused.value.expression == [query.split("=", 1)[0]]  # the outcome names the parameter


def test_unknown_parameters_are_dropped_unless_strict(registry: SearchRegistry) -> None:
    assert parsed(registry, "Task", "colour=red&status=ready").sexp() == "(token Task.status ready)"
    with pytest.raises(InvalidRequest) as refused:
        parsed(registry, "Task", "colour=red", strict=True)
    assert "unknown or unsupported search parameter 'colour'" in refused.value.message
