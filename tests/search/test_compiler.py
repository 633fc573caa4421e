"""The compiler's SQL, per dialect, without a database: what each typed value puts on its index table and
how clauses compose (AND, OR, :not, :missing, chains, _has, compartments, the read gate, _sort, keyset).

The HTTP tests and the oracle (test_oracle.py) check the answers; these
check the statements, so a change in how a query is built shows up here.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest
from sqlalchemy import ClauseElement, Text, literal
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import Dialect

from app.search.compiler import (
    chain_reaches,
    clause_condition,
    compile_count,
    compile_search,
    referenced_by_matches,
)
from app.search.gate import compartment_gate
from app.search.registry import SearchRegistry
from app.search.request import ChainClause, HasClause, SearchRequest, parse_search
from tests.search.conftest import DIALECTS


def sql(element: ClauseElement, dialect: Dialect) -> str:
    compiled = element.compile(dialect=dialect, compile_kwargs={"literal_binds": True})
    return re.sub(r"\s+", " ", str(compiled)).strip()


def request(registry: SearchRegistry, resource_type: str, *pairs: tuple[str, str]) -> SearchRequest:
    return parse_search(resource_type, list(pairs), registry, 20, 100)


def condition(registry: SearchRegistry, dialect: Dialect, resource_type: str, name: str, value: str) -> str:
    return sql(clause_condition(request(registry, resource_type, (name, value)).clauses[0]), dialect)


@pytest.mark.parametrize(
    ("resource_type", "name", "value", "fragment"),
    [
        ("Task", "status", "requested", "idx_token.code = 'requested'"),
        ("Patient", "identifier", "urn:mrn|42", "idx_token.system = 'urn:mrn' AND idx_token.code = '42'"),
        ("Patient", "identifier", "|42", "idx_token.system IS NULL AND idx_token.code = '42'"),
        ("Patient", "identifier", "urn:mrn|", "WHERE idx_token.param_hash = "),
        ("Patient", "name", "Renée", "idx_string.value_norm >= 'renee' AND idx_string.value_norm < 'renee\U0010ffff'"),
        ("Patient", "name:exact", "Renée", "idx_string.value_exact = 'Renée'"),
        ("Patient", "name:contains", "a_b%", "idx_string.value_norm LIKE '%"),
        ("Patient", "name:contains", "a_b%", "a\\_b\\%"),
        (
            "CarePlan",
            "subject",
            "Patient/p1",
            "idx_reference.target_type = 'Patient' AND idx_reference.target_id = 'p1'",
        ),
        (
            "CarePlan",
            "subject:Patient",
            "p1",
            "idx_reference.target_type = 'Patient' AND idx_reference.target_id = 'p1'",
        ),
        ("CarePlan", "subject", "p1", "idx_reference.resource_type = 'CarePlan' AND idx_reference.target_id = 'p1'"),
        (
            "CarePlan",
            "subject",
            "http://x.org/fhir/Patient/9",
            "(idx_reference.url = 'http://x.org/fhir/Patient/9' OR idx_reference.target_type = 'Patient' "
            "AND idx_reference.target_id = '9')",
        ),
        (
            "CarePlan",
            "subject:identifier",
            "urn:mrn|",
            "idx_reference.identifier_system = 'urn:mrn' AND idx_reference.identifier_value IS NOT NULL",
        ),
        ("RiskAssessment", "probability", "100", "idx_number.value >= 99.5 AND idx_number.value < 100.5"),
        ("RiskAssessment", "probability", "100.0", "idx_number.value >= 99.95 AND idx_number.value < 100.05"),
        ("RiskAssessment", "probability", "gt0.8", "idx_number.value > 0.8"),
        (
            "Observation",
            "value-quantity",
            "le5.4|http://unitsofmeasure.org|mg",
            "idx_quantity.value <= 5.4 AND idx_quantity.system = 'http://unitsofmeasure.org' "
            "AND idx_quantity.code = 'mg'",
        ),
        ("ValueSet", "url", "http://acme.org/vs", "idx_uri.value = 'http://acme.org/vs'"),
        ("ValueSet", "url:below", "http://acme.org", "idx_uri.value >= 'http://acme.org' AND idx_uri.value <"),
        (
            "ValueSet",
            "url:above",
            "http://acme.org/fhir/vs",
            "idx_uri.value IN ('http://acme.org', 'http://acme.org/fhir', 'http://acme.org/fhir/vs')",
        ),
    ],
)
def test_each_type_puts_its_condition_on_its_index_table(
    registry: SearchRegistry, dialect: Dialect, resource_type: str, name: str, value: str, fragment: str
) -> None:
    compiled = condition(registry, dialect, resource_type, name, value)
    assert compiled.startswith("resources.id IN (SELECT ")
    assert fragment in compiled


def test_dates_compare_utc_ranges_in_each_dialect(registry: SearchRegistry) -> None:
    on_postgresql = condition(registry, DIALECTS["postgresql"], "CarePlan", "date", "2026-03-05")
    on_sqlite = condition(registry, DIALECTS["sqlite"], "CarePlan", "date", "2026-03-05")
    assert (
        "idx_date.low >= '2026-03-05 00:00:00+00:00' AND idx_date.high <= '2026-03-05 23:59:59.999999+00:00'"
        in on_postgresql
    )
    # SQLite stores naive UTC text (app.storage.tables.UTCDateTime)
    assert "idx_date.low >= '2026-03-05 00:00:00.000000' AND idx_date.high <= '2026-03-05 23:59:59.999999'" in on_sqlite


def test_values_of_one_parameter_are_ored_and_parameters_anded(registry: SearchRegistry, dialect: Dialect) -> None:
    query = request(registry, "Task", ("status", "requested,accepted"), ("owner", "Practitioner/1"))
    compiled = sql(compile_count(query), dialect)
    assert "(idx_token.code = 'requested' OR idx_token.code = 'accepted')" in compiled
    assert compiled.count("resources.id IN (SELECT") == 2
    assert "resources.resource_type = 'Task' AND resources.deleted IS 0" in compiled or (
        "resources.resource_type = 'Task' AND resources.deleted IS false" in compiled
    )


def test_not_and_missing_are_anti_joins(registry: SearchRegistry, dialect: Dialect) -> None:
    assert condition(registry, dialect, "Task", "status:not", "cancelled").startswith(
        "(resources.id NOT IN (SELECT idx_token.resource_id FROM idx_token WHERE"
    )
    missing = condition(registry, dialect, "Task", "owner:missing", "true")
    assert missing.startswith("(resources.id NOT IN (SELECT idx_reference.resource_id")
    assert "target_id" not in missing  # any row of the parameter counts
    present = condition(registry, dialect, "Task", "owner:missing", "false")
    assert present.startswith("resources.id IN (SELECT idx_reference.resource_id")


def test_id_and_last_updated_are_columns_of_resources(registry: SearchRegistry, dialect: Dialect) -> None:
    assert condition(registry, dialect, "Task", "_id", "a,b") == "resources.id IN ('a', 'b')"
    assert condition(registry, dialect, "Task", "_id:not", "a") == "(resources.id NOT IN ('a'))"
    assert condition(registry, dialect, "Task", "_lastUpdated", "gt2026").startswith(
        "resources.last_updated > '2026-12-31"
    )


def test_chains_and_has_nest_uncorrelated_subqueries(registry: SearchRegistry, dialect: Dialect) -> None:
    chain = condition(registry, dialect, "Task", "owner:Practitioner.name", "osei")
    assert chain.startswith("resources.id IN (SELECT idx_reference.resource_id FROM idx_reference WHERE")
    assert (
        "idx_reference.target_type = 'Practitioner' AND idx_reference.target_id IN (SELECT idx_string.resource_id"
        in (chain)
    )
    has = condition(registry, dialect, "Patient", "_has:Task:patient:status", "requested")
    assert has.startswith("resources.id IN (SELECT idx_reference.target_id FROM idx_reference WHERE")
    assert "idx_reference.resource_type = 'Task' AND idx_reference.target_type = 'Patient'" in has
    assert "idx_reference.resource_id IN (SELECT idx_token.resource_id FROM idx_token" in has


def test_a_chain_or_has_before_the_write_asks_only_the_stored_resources(registry: SearchRegistry) -> None:
    chained = request(registry, "Task", ("owner:Practitioner.name", "osei")).clauses[0]
    assert isinstance(chained, ChainClause)
    targets = literal(["n1", "n2"], ARRAY(Text()))
    reach = sql(chain_reaches(chained, {"Practitioner": targets}), DIALECTS["postgresql"])
    assert reach.startswith("EXISTS (SELECT idx_string.resource_id FROM idx_string WHERE")
    assert "idx_string.resource_id = ANY (ARRAY['n1', 'n2'])" in reach  # the targets known in memory
    assert "idx_reference" not in reach  # not the written resource's own rows: they are not stored yet
    has = request(registry, "Patient", ("_has:Task:patient:status", "requested")).clauses[0]
    assert isinstance(has, HasClause)
    referenced = sql(referenced_by_matches(has, "Patient", literal("p9")), DIALECTS["postgresql"])
    assert referenced.startswith("EXISTS (SELECT idx_reference.resource_id FROM idx_reference WHERE")
    assert "idx_reference.target_type = 'Patient' AND idx_reference.target_id = 'p9'" in referenced


def test_composites_join_their_components_on_the_combination(registry: SearchRegistry, dialect: Dialect) -> None:
    compiled = condition(registry, dialect, "Observation", "code-value-quantity", "http://loinc.org|8480-6$gt140")
    assert "FROM idx_token AS composite_0, idx_quantity AS composite_1" in compiled
    assert "composite_1.resource_id = composite_0.resource_id AND composite_1.combo = composite_0.combo" in compiled
    assert "composite_1.value > 140" in compiled


def test_the_read_gate_and_compartments_are_conditions_of_the_search(
    registry: SearchRegistry, dialect: Dialect
) -> None:
    query = parse_search("CarePlan", [("status", "active")], registry, 20, 100, compartment=("Patient", "p1"))
    gate = compartment_gate(registry, "Patient", "p2")
    compiled = sql(compile_search(query, None, 21, gate), dialect)
    assert "idx_reference.target_type = 'Patient' AND idx_reference.target_id = 'p1'" in compiled  # compartment
    assert "gate_reference.target_type = 'Patient' AND gate_reference.target_id = 'p2'" in compiled  # the gate
    assert "ORDER BY resources.id LIMIT 21" in compiled


def test_without_sort_keys_the_matches_are_selected_from_the_rows_in_id_order(
    registry: SearchRegistry, dialect: Dialect
) -> None:
    query = request(registry, "CarePlan", ("status", "active"))
    compiled = sql(compile_search(query, ["cp-9"], 10), dialect)
    assert compiled.startswith("SELECT resources.id, resources.body FROM resources WHERE ")
    assert "anon_1" not in compiled  # no subquery to label sort values
    assert "AND resources.id > 'cp-9' ORDER BY resources.id LIMIT 10" in compiled


def test_sort_keys_and_the_keyset_cursor(registry: SearchRegistry, dialect: Dialect) -> None:
    query = request(registry, "CarePlan", ("_sort", "-date,status"))
    cursor = [datetime(2026, 1, 1, tzinfo=UTC), "active", "cp-9"]
    compiled = sql(compile_search(query, cursor, 10), dialect)
    assert "(SELECT max(idx_date.high) AS max_1 FROM idx_date WHERE" in compiled
    assert "(SELECT min(idx_token.code) AS min_1 FROM idx_token WHERE" in compiled
    assert "anon_1.id > 'cp-9'" in compiled
    assert "ORDER BY anon_1.sort_0 DESC NULLS LAST, anon_1.sort_1 ASC NULLS LAST, anon_1.id LIMIT 10" in compiled
