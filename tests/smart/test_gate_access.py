"""The read gate with SMART access, without a database: 403s, the compartment check of writes, and SQL.

``ReadGate.access`` (built from a token's scopes by ``Permissions.type_access``)
decides three things every interaction relies on: whether a letter is
granted on a type at all (``require``, ``require_any``), whether a write by a
caller confined to Patient/p1 lands inside p1's compartment (``admits``,
judged on the new version's reference index rows), and which rows a read
may select (``ids``, ``rows``: SQL conditions). The HTTP tests check the
answers; these check each decision directly, including Task, which is in
the Patient compartment for access only (through its ``patient`` parameter).
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from sqlalchemy import ClauseElement, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect

from app.errors import Forbidden
from app.main import served_resource_types
from app.search.extraction import Extractor
from app.search.gate import compartment_gate
from app.search.indexing import build_index_rows
from app.search.registry import SearchRegistry, load_registry
from app.smart.scopes import parse_permissions
from app.storage.gate import OPEN, ReadGate
from app.storage.index_tables import IndexRows
from app.storage.tables import resources

SQLITE: Dialect = sqlite.dialect()
POSTGRESQL: Dialect = postgresql.dialect()  # type: ignore[no-untyped-call]


@pytest.fixture(scope="module")
def registry() -> SearchRegistry:
    return load_registry(served_resource_types())


@pytest.fixture(scope="module")
def extractor(registry: SearchRegistry) -> Extractor:
    return Extractor(registry)


def gate(registry: SearchRegistry, scope: str, patient: str = "p1") -> ReadGate:
    return compartment_gate(registry, "Patient", patient, parse_permissions(scope).type_access())


def sql(element: ClauseElement, dialect: Dialect = SQLITE) -> str:
    compiled = element.compile(dialect=dialect, compile_kwargs={"literal_binds": True})
    return re.sub(r"\s+", " ", str(compiled)).strip()


def hashes_shown(text: str) -> str:
    """The SQL with the long list of compartment parameter hashes of ``rows`` elided."""
    return re.sub(r"param_hash IN \([-0-9, ]+\)", "param_hash IN (...)", text)


def reference_rows(registry: SearchRegistry, resource_type: str, *links: tuple[str, str]) -> IndexRows:
    """Reference index rows of a ``resource_type`` whose parameter ``code`` points to ``target`` (Type/id)."""
    rows: list[dict[str, Any]] = []
    for code, target in links:
        param = registry.get(resource_type, code)
        assert param is not None and param.type == "reference", f"{resource_type}.{code}"
        target_type, _, target_id = target.partition("/")
        rows.append({"param_hash": param.hash, "target_type": target_type, "target_id": target_id})
    return {"reference": rows}


def test_require_passes_a_granted_letter_and_refuses_a_missing_one(registry: SearchRegistry) -> None:
    confined = gate(registry, "patient/CarePlan.rs user/Practitioner.r")
    confined.require("CarePlan", "r")
    confined.require("CarePlan", "s")
    confined.require("Practitioner", "r")
    with pytest.raises(Forbidden) as update:
        confined.require("CarePlan", "u")
    assert update.value.message == "the access token does not permit update of CarePlan"
    with pytest.raises(Forbidden) as read:
        confined.require("Task", "r")
    assert read.value.message == "the access token does not permit read of Task"
    with pytest.raises(Forbidden) as search:
        confined.require("Practitioner", "s")
    assert search.value.message == "the access token does not permit search of Practitioner"


def test_reach_tells_everywhere_from_inside_the_compartment(registry: SearchRegistry) -> None:
    confined = gate(registry, "patient/CarePlan.rs user/Practitioner.r")
    assert confined.reach("CarePlan", "r") == "compartment"
    assert confined.reach("Practitioner", "r") == "all"
    assert confined.reach("Task", "r") == "none"
    assert not confined.permits("Task", "r") and confined.permits("CarePlan", "s")
    # without access, a compartment gate confines every type, and the open gate confines none
    assert compartment_gate(registry, "Patient", "p1").reach("Task", "d") == "compartment"
    assert OPEN.reach("Task", "d") == "all" and OPEN.open


def test_require_any_refuses_a_letter_no_type_has(registry: SearchRegistry) -> None:
    confined = gate(registry, "patient/CarePlan.rs user/Practitioner.c patient/Observation.rs?category=laboratory")
    confined.require_any("s")
    confined.require_any("c")
    with pytest.raises(Forbidden) as delete:
        confined.require_any("d")
    assert delete.value.message == "the access token does not permit delete of any resource type"
    gate(registry, "user/*.d").require_any("d")
    OPEN.require_any("d")
    compartment_gate(registry, "Patient", "p1").require_any("d")
    with pytest.raises(Forbidden):  # a granular scope grants nothing
        ReadGate(None, {}, parse_permissions("user/Observation.rs?category=laboratory").type_access()).require_any("s")


def test_admits_a_care_plan_that_refers_to_the_compartment_patient(registry: SearchRegistry) -> None:
    confined = gate(registry, "patient/CarePlan.cruds")
    rows = reference_rows(registry, "CarePlan", ("subject", "Patient/p1"), ("patient", "Patient/p1"))
    confined.admits("CarePlan", "c1", rows, "c")
    confined.admits("CarePlan", "c1", reference_rows(registry, "CarePlan", ("performer", "Patient/p1")), "u")


def test_admits_refuses_a_care_plan_of_another_patient(registry: SearchRegistry) -> None:
    confined = gate(registry, "patient/CarePlan.cruds")
    rows = reference_rows(registry, "CarePlan", ("subject", "Patient/p2"), ("patient", "Patient/p2"))
    with pytest.raises(Forbidden) as refused:
        confined.admits("CarePlan", "c2", rows, "c")
    assert refused.value.message == (
        "CarePlan/c2 would be outside the compartment Patient/p1 the access token is limited to"
    )
    with pytest.raises(Forbidden):  # no reference at all
        confined.admits("CarePlan", "c3", {}, "c")
    with pytest.raises(Forbidden):  # p1 in the id, but not a Patient
        confined.admits("CarePlan", "c4", reference_rows(registry, "CarePlan", ("patient", "Group/p1")), "u")


def test_admits_only_references_through_a_compartment_parameter(registry: SearchRegistry) -> None:
    # R4's Patient compartment holds CarePlan through ``patient`` and ``performer``; ``subject`` (which also
    # names Groups) is not one of them, so a row of it alone does not put the plan in the compartment.
    confined = gate(registry, "patient/CarePlan.cruds")
    with pytest.raises(Forbidden):
        confined.admits("CarePlan", "c1", reference_rows(registry, "CarePlan", ("subject", "Patient/p1")), "c")
    with pytest.raises(Forbidden):  # a Task's owner is not its patient
        gate(registry, "patient/Task.cruds").admits(
            "Task", "t1", reference_rows(registry, "Task", ("owner", "Patient/p1")), "c"
        )


def test_admits_the_compartment_patient_itself_and_no_other(registry: SearchRegistry) -> None:
    confined = gate(registry, "patient/Patient.ru")
    confined.admits("Patient", "p1", {}, "u")
    with pytest.raises(Forbidden) as other:
        confined.admits("Patient", "p2", {}, "u")
    assert (
        other.value.message == "Patient/p2 would be outside the compartment Patient/p1 the access token is limited to"
    )


def test_admits_a_task_for_the_patient_through_its_patient_parameter(registry: SearchRegistry) -> None:
    confined = gate(registry, "patient/Task.cu")
    confined.admits("Task", "t1", reference_rows(registry, "Task", ("patient", "Patient/p1")), "c")
    with pytest.raises(Forbidden):
        confined.admits("Task", "t2", reference_rows(registry, "Task", ("patient", "Patient/p2")), "u")


def test_admits_judges_the_rows_extraction_really_produces(registry: SearchRegistry, extractor: Extractor) -> None:
    def rows(body: dict[str, Any]) -> IndexRows:
        return build_index_rows(body["resourceType"], body["id"], extractor.extract(body["resourceType"], body))

    confined = gate(registry, "patient/CarePlan.c patient/Task.c")
    plan = {"resourceType": "CarePlan", "id": "c1", "status": "active", "intent": "plan"}
    confined.admits("CarePlan", "c1", rows({**plan, "subject": {"reference": "Patient/p1"}}), "c")
    with pytest.raises(Forbidden):
        confined.admits("CarePlan", "c1", rows({**plan, "subject": {"reference": "Patient/p2"}}), "c")
    task = {"resourceType": "Task", "id": "t1", "status": "requested", "intent": "order"}
    confined.admits("Task", "t1", rows({**task, "for": {"reference": "Patient/p1"}}), "c")
    with pytest.raises(Forbidden):  # Task.owner is no compartment parameter, even for access
        confined.admits("Task", "t1", rows({**task, "owner": {"reference": "Patient/p1"}}), "c")


def test_admits_a_type_reached_everywhere_without_rows(registry: SearchRegistry) -> None:
    confined = gate(registry, "patient/CarePlan.rs user/Practitioner.cruds user/CarePlan.u")
    confined.admits("Practitioner", "dr", {}, "c")
    # update of CarePlan is granted everywhere, so any plan may be updated; create is not granted at all
    confined.admits("CarePlan", "c2", reference_rows(registry, "CarePlan", ("patient", "Patient/p2")), "u")
    with pytest.raises(Forbidden) as create:
        confined.admits("CarePlan", "c2", reference_rows(registry, "CarePlan", ("patient", "Patient/p1")), "c")
    assert create.value.message == "the access token does not permit create of CarePlan"


def test_admits_refuses_patient_scopes_without_a_patient_context() -> None:
    no_patient = ReadGate(None, {}, parse_permissions("patient/CarePlan.cruds").type_access())
    with pytest.raises(Forbidden) as refused:
        no_patient.admits("CarePlan", "c1", {}, "c")
    assert refused.value.message == "the access token has no patient context for create of CarePlan"


@pytest.mark.parametrize(("dialect", "true", "false"), [(SQLITE, "1", "0"), (POSTGRESQL, "true", "false")])
def test_ids_is_true_false_or_the_id_of_the_compartment_patient(
    registry: SearchRegistry, dialect: Dialect, true: str, false: str
) -> None:
    confined = gate(registry, "patient/Patient.r patient/CarePlan.s user/Practitioner.rs patient/Observation.c")
    column = resources.c.id
    assert sql(confined.ids("Practitioner", column), dialect) == true  # reached everywhere
    assert sql(confined.ids("Task", column), dialect) == false  # not granted
    assert sql(confined.ids("Observation", column), dialect) == false  # create is no read
    assert sql(confined.ids("Patient", column), dialect) == "resources.id = 'p1'"
    assert sql(OPEN.ids("Task", column), dialect) == true
    # a type granted inside the compartment but not a member of it can read nothing
    assert sql(gate(registry, "patient/Practitioner.rs").ids("Practitioner", column), dialect) == false
    # a granular scope grants nothing
    assert (
        sql(gate(registry, "patient/Observation.rs?category=laboratory").ids("Observation", column), dialect) == false
    )


def test_ids_of_a_member_type_is_the_compartment_subquery(registry: SearchRegistry) -> None:
    confined = gate(registry, "patient/CarePlan.rs patient/Task.r")
    care_plan = {param.hash for code in ("patient", "performer") if (param := registry.get("CarePlan", code))}
    assert len(care_plan) == 2
    compiled = sql(confined.ids("CarePlan", resources.c.id))
    listed = re.search(r"param_hash IN \(([-0-9, ]+)\)", compiled)
    assert listed is not None and {int(h) for h in listed.group(1).split(", ")} == care_plan
    assert hashes_shown(compiled) == (
        "resources.id IN (SELECT gate_reference.resource_id FROM idx_reference AS gate_reference "
        "WHERE gate_reference.param_hash IN (...) AND gate_reference.resource_type = 'CarePlan' "
        "AND gate_reference.target_type = 'Patient' AND gate_reference.target_id = 'p1')"
    )
    task_patient = registry.get("Task", "patient")
    assert task_patient is not None
    task = task_patient.hash
    assert sql(confined.ids("Task", resources.c.id)) == (
        "resources.id IN (SELECT gate_reference.resource_id FROM idx_reference AS gate_reference "
        f"WHERE gate_reference.param_hash IN ({task}) AND gate_reference.resource_type = 'Task' "
        "AND gate_reference.target_type = 'Patient' AND gate_reference.target_id = 'p1')"
    )


def _rows(confined: ReadGate) -> str:
    column = resources.c
    return hashes_shown(sql(select(column.id).where(confined.rows(column.resource_type, column.id))))


LINKED = (
    "EXISTS (SELECT gate_reference.resource_id FROM idx_reference AS gate_reference "
    "WHERE gate_reference.resource_type = resources.resource_type AND gate_reference.resource_id = resources.id "
    "AND gate_reference.param_hash IN (...) AND gate_reference.target_type = 'Patient' "
    "AND gate_reference.target_id = 'p1')"
)


def test_rows_is_true_or_false_when_nothing_is_confined(registry: SearchRegistry) -> None:
    assert _rows(gate(registry, "user/*.rs")) == "SELECT resources.id FROM resources WHERE 1 = 1"
    assert _rows(gate(registry, "patient/*.r user/*.s")) == "SELECT resources.id FROM resources WHERE 1 = 1"
    assert _rows(OPEN) == "SELECT resources.id FROM resources WHERE 1 = 1"
    assert _rows(gate(registry, "user/*.cud patient/*.cud")) == "SELECT resources.id FROM resources WHERE 0 = 1"
    assert (
        _rows(gate(registry, "patient/CarePlan.rs?status=active")) == "SELECT resources.id FROM resources WHERE 0 = 1"
    )
    unrestricted_types = ReadGate(None, {}, parse_permissions("user/Practitioner.r user/Task.s").type_access())
    assert _rows(unrestricted_types) == (
        "SELECT resources.id FROM resources WHERE resources.resource_type IN ('Practitioner', 'Task')"
    )


def test_rows_joins_types_reached_everywhere_and_the_compartment(registry: SearchRegistry) -> None:
    assert _rows(gate(registry, "user/Practitioner.r patient/CarePlan.rs patient/Task.s")) == (
        "SELECT resources.id FROM resources WHERE resources.resource_type IN ('Practitioner') "
        f"OR resources.resource_type IN ('CarePlan', 'Task') AND ({LINKED})"
    )


def test_rows_include_the_patient_only_when_patient_is_granted(registry: SearchRegistry) -> None:
    assert _rows(gate(registry, "patient/Patient.r patient/CarePlan.r")) == (
        "SELECT resources.id FROM resources WHERE resources.resource_type = 'Patient' AND resources.id = 'p1' "
        f"OR resources.resource_type IN ('CarePlan', 'Patient') AND ({LINKED})"
    )
    assert _rows(gate(registry, "patient/*.rs")) == (
        "SELECT resources.id FROM resources WHERE resources.resource_type = 'Patient' AND resources.id = 'p1' "
        f"OR ({LINKED})"
    )
    assert _rows(compartment_gate(registry, "Patient", "p1")) == _rows(gate(registry, "patient/*.rs"))
