"""FHIRPath Patch on JSON resources (``app/interactions/fhirpath_patch.py``, hl7.org/fhir/R4/fhirpatch.html).

``parse_patch`` reads a ``Parameters`` resource into operations (400 for a
malformed document); ``apply_fhirpath_patch`` applies them in order to a copy
(422 for a patch that does not fit this resource: a path that must name one
element and names none or several, an index past the end, an element that
already has a value); ``resolve`` finds the places a path names: elements,
``[n]``, ``where()``, ``first()``, ``last()`` and choice elements by base name.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from app.errors import FhirError, InvalidRequest, Unprocessable
from app.interactions.fhirpath_patch import Operation, apply_fhirpath_patch, parse_patch, resolve

TASK: dict[str, Any] = {
    "resourceType": "Task",
    "id": "t1",
    "status": "requested",
    "intent": "order",
    "identifier": [{"system": "urn:a", "value": "1"}, {"system": "urn:b", "value": "2"}],
    "for": {"reference": "Patient/p1"},
    "note": [{"text": "first"}, {"text": "second"}, {"text": "third"}],
}
PATIENT: dict[str, Any] = {
    "resourceType": "Patient",
    "id": "p1",
    "active": True,
    "name": [{"family": "Rivera", "given": ["Ana", "Beatriz"]}, {"use": "old", "family": "Ortiz"}],
}
OBSERVATION: dict[str, Any] = {
    "resourceType": "Observation",
    "status": "final",
    "code": {"text": "weight"},
    "valueQuantity": {"value": 70, "unit": "kg"},
}


def operation(kind: str | None, path: str | None, **parts: dict[str, Any]) -> dict[str, Any]:
    """One ``operation`` parameter; ``parts`` are extra parts by name (``value={"valueCode": "x"}``)."""
    part: list[dict[str, Any]] = []
    if kind is not None:
        part.append({"name": "type", "valueCode": kind})
    if path is not None:
        part.append({"name": "path", "valueString": path})
    part.extend({"name": name, **value} for name, value in parts.items())
    return {"name": "operation", "part": part}


def patch(*operations: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Parameters", "parameter": list(operations)}


def patched(resource: dict[str, Any], *operations: dict[str, Any]) -> dict[str, Any]:
    """The patched copy, checking on the way that ``resource`` was not touched."""
    before = copy.deepcopy(resource)
    result = apply_fhirpath_patch(resource, patch(*operations))
    assert resource == before
    return result


def unprocessable(resource: dict[str, Any], *operations: dict[str, Any]) -> str:
    before = copy.deepcopy(resource)
    with pytest.raises(Unprocessable) as refused:
        apply_fhirpath_patch(resource, patch(*operations))
    assert resource == before
    return refused.value.message


def refused(resource: dict[str, Any], *operations: dict[str, Any]) -> str:
    with pytest.raises(InvalidRequest) as caught:
        apply_fhirpath_patch(resource, patch(*operations))
    return caught.value.message


def texts(resource: dict[str, Any]) -> list[str]:
    return [note["text"] for note in resource.get("note", [])]


# --- parse_patch -----------------------------------------------------------------------------------


def test_operations_are_read_with_their_parts() -> None:
    operations = parse_patch(
        patch(
            operation("add", "Task", name={"valueString": "priority"}, value={"valueCode": "urgent"}),
            operation("insert", "Task.note", index={"valueInteger": 0}, value={"valueAnnotation": {"text": "zero"}}),
            operation("delete", "Task.identifier.where(system = 'urn:a')"),
            operation("replace", "Task.status", value={"valueCode": "accepted"}),
            operation("move", "Task.note", source={"valueInteger": 2}, destination={"valueInteger": 0}),
            operation(
                "add",
                "Task",
                name={"valueString": "owner"},
                value={"part": [{"name": "reference", "valueString": "Practitioner/n1"}]},
            ),
        )
    )
    assert operations == [
        Operation("add", "Task", name="priority", value="urgent", value_type="Code"),
        Operation("insert", "Task.note", value={"text": "zero"}, value_type="Annotation", index=0),
        Operation("delete", "Task.identifier.where(system = 'urn:a')"),
        Operation("replace", "Task.status", value="accepted", value_type="Code"),
        Operation("move", "Task.note", source=2, destination=0),
        Operation("add", "Task", name="owner", value={"reference": "Practitioner/n1"}),
    ]


def test_nested_parts_build_a_complex_value() -> None:
    value = {
        "part": [
            {"name": "type", "valueCodeableConcept": {"text": "lab"}},
            {"name": "valueString", "valueString": "ok"},
            {"name": "extra", "part": [{"name": "code", "valueCode": "x"}]},
        ]
    }
    [parsed] = parse_patch(patch(operation("add", "Task", name={"valueString": "input"}, value=value)))
    assert parsed.value == {"type": {"text": "lab"}, "valueString": "ok", "extra": {"code": "x"}}


@pytest.mark.parametrize(
    ("parameters", "message", "expression"),
    [
        ("not a resource", "a FHIRPath Patch is a Parameters resource", []),
        ({"resourceType": "Patient"}, "a FHIRPath Patch is a Parameters resource", []),
        ({"resourceType": "Parameters"}, "the patch has no operations", []),
        (patch(), "the patch has no operations", []),
        (
            {"resourceType": "Parameters", "parameter": {}},
            "Parameters.parameter must be an array of operations",
            ["Parameters.parameter"],
        ),
        (patch({"name": "other"}), "Parameters.parameter[0] is not an 'operation'", ["Parameters.parameter[0]"]),
        (
            {"resourceType": "Parameters", "parameter": ["operation"]},
            "Parameters.parameter[0] is not an 'operation'",
            ["Parameters.parameter[0]"],
        ),
        (
            patch({"name": "operation", "part": "x"}),
            "Parameters.parameter[0].part must be an array of parts",
            ["Parameters.parameter[0].part"],
        ),
        (
            patch({"name": "operation", "part": ["x"]}),
            "Parameters.parameter[0].part must be an array of parts",
            ["Parameters.parameter[0].part"],
        ),
        (
            patch(operation(None, "Task.status")),
            "Parameters.parameter[0]: type must be one of add, delete, insert, move, replace",
            ["Parameters.parameter[0]"],
        ),
        (
            patch(operation("frobnicate", "Task.status")),
            "Parameters.parameter[0]: type must be one of add, delete, insert, move, replace",
            ["Parameters.parameter[0]"],
        ),
        (
            patch({"name": "operation", "part": [{"name": "type", "valueString": "delete"}]}),
            "type must be one of",
            ["Parameters.parameter[0]"],
        ),
        (
            patch(operation("delete", None)),
            "Parameters.parameter[0]: an operation needs a path",
            ["Parameters.parameter[0]"],
        ),
        (patch(operation("delete", "")), "an operation needs a path", ["Parameters.parameter[0]"]),
        (
            patch(operation("delete", "Task.note"), operation("replace", "Task.status")),
            "Parameters.parameter[1]: a replace operation needs value",
            ["Parameters.parameter[1]"],
        ),
        (
            patch(operation("add", "Task", value={"valueCode": "x"})),
            "an add operation needs name",
            ["Parameters.parameter[0]"],
        ),
        (patch(operation("add", "Task")), "an add operation needs name, value", ["Parameters.parameter[0]"]),
        (
            patch(operation("insert", "Task.note", value={"valueString": "x"})),
            "an insert operation needs index",
            ["Parameters.parameter[0]"],
        ),
        (
            patch(operation("move", "Task.note")),
            "a move operation needs source, destination",
            ["Parameters.parameter[0]"],
        ),
        (
            patch(operation("move", "Task.note", source={"valueInteger": 0})),
            "a move operation needs destination",
            ["Parameters.parameter[0]"],
        ),
        (
            patch(operation("insert", "Task.note", index={"valueInteger": -1}, value={"valueString": "x"})),
            "Parameters.parameter[0]: index must be a non-negative integer",
            ["Parameters.parameter[0]"],
        ),
        (
            patch(operation("insert", "Task.note", index={"valueInteger": True}, value={"valueString": "x"})),
            "index must be a non-negative integer",
            ["Parameters.parameter[0]"],
        ),
        (
            patch(operation("move", "Task.note", source={"valueString": "1"}, destination={"valueInteger": 0})),
            "source must be a non-negative integer",
            ["Parameters.parameter[0]"],
        ),
        (
            patch(operation("add", "Task", name={"valueString": "bad name"}, value={"valueCode": "x"})),
            "Parameters.parameter[0]: name must be an element name",
            ["Parameters.parameter[0]"],
        ),
        (
            patch(operation("replace", "Task.status", value={})),
            "patch value 'value' has no value[x] and no parts",
            [],
        ),
        (
            patch(operation("add", "Task", name={"valueString": "owner"}, value={"part": [{"valueString": "x"}]})),
            "a part of a complex patch value has no name",
            [],
        ),
        (
            patch(operation("add", "Task", name={"valueString": "owner"}, value={"part": [{"name": "reference"}]})),
            "patch value 'reference' has no value[x] and no parts",
            [],
        ),
    ],
)
def test_malformed_patches_are_400(parameters: Any, message: str, expression: list[str]) -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_patch(parameters)
    assert type(caught.value) is InvalidRequest
    assert message in caught.value.message
    assert caught.value.expression == expression


# --- add -------------------------------------------------------------------------------------------


def test_add_a_primitive() -> None:
    result = patched(TASK, operation("add", "Task", name={"valueString": "priority"}, value={"valueCode": "urgent"}))
    assert result == {**TASK, "priority": "urgent"}


def test_add_a_repeating_element_starts_a_list() -> None:
    reference = {"reference": "ServiceRequest/sr1"}
    result = patched(
        TASK, operation("add", "Task", name={"valueString": "basedOn"}, value={"valueReference": reference})
    )
    assert result["basedOn"] == [reference]


def test_add_appends_to_a_list() -> None:
    result = patched(
        TASK, operation("add", "Task", name={"valueString": "note"}, value={"valueAnnotation": {"text": "4"}})
    )
    assert texts(result) == ["first", "second", "third", "4"]


def test_add_a_backbone_element_from_parts() -> None:
    value = {
        "part": [
            {"name": "type", "valueCodeableConcept": {"text": "lab"}},
            {"name": "valueString", "valueString": "ok"},
        ]
    }
    result = patched(TASK, operation("add", "Task", name={"valueString": "input"}, value=value))
    assert result["input"] == [{"type": {"text": "lab"}, "valueString": "ok"}]


def test_add_inside_an_element_found_by_where() -> None:
    result = patched(
        TASK,
        operation(
            "add",
            "Task.note.where(text = 'second')",
            name={"valueString": "authorString"},
            value={"valueString": "Ana"},
        ),
        operation("add", "Task.for", name={"valueString": "display"}, value={"valueString": "Ana Rivera"}),
    )
    assert result["note"][1] == {"text": "second", "authorString": "Ana"}
    assert result["for"] == {"reference": "Patient/p1", "display": "Ana Rivera"}


@pytest.mark.parametrize(
    ("path", "name", "message"),
    [
        ("Task", "status", "add: 'Task.status' already has a value (use replace)"),
        ("Task.status", "extension", "add: 'Task.status' is not an element that can have children"),
        ("Task.note", "authorString", "add: path 'Task.note' must name exactly one element, it names 3"),
        ("Task.owner", "display", "add: path 'Task.owner' must name exactly one element, it names 0"),
    ],
)
def test_add_that_does_not_fit_is_422(path: str, name: str, message: str) -> None:
    assert (
        unprocessable(TASK, operation("add", path, name={"valueString": name}, value={"valueString": "x"})) == message
    )


# --- insert ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("index", "expected"),
    [
        (0, ["new", "first", "second", "third"]),
        (1, ["first", "new", "second", "third"]),
        (3, ["first", "second", "third", "new"]),
    ],
)
def test_insert_at_an_index(index: int, expected: list[str]) -> None:
    result = patched(
        TASK,
        operation("insert", "Task.note", index={"valueInteger": index}, value={"valueAnnotation": {"text": "new"}}),
    )
    assert texts(result) == expected


def test_insert_into_an_absent_list_creates_it() -> None:
    reference = {"reference": "ServiceRequest/sr1"}
    result = patched(
        TASK, operation("insert", "Task.basedOn", index={"valueInteger": 0}, value={"valueReference": reference})
    )
    assert result["basedOn"] == [reference]


def test_insert_into_a_nested_list() -> None:
    result = patched(
        PATIENT,
        operation(
            "insert",
            "Patient.name.where(family = 'Rivera').given",
            index={"valueInteger": 1},
            value={"valueString": "C"},
        ),
    )
    assert result["name"][0]["given"] == ["Ana", "C", "Beatriz"]
    assert result["name"][1] == PATIENT["name"][1]


@pytest.mark.parametrize(
    ("path", "index", "message"),
    [
        ("Task.note", 4, "insert: index 4 is beyond the 3 items of 'Task.note'"),
        ("Task.basedOn", 1, "insert: index 1 is beyond the 0 items of 'Task.basedOn'"),
        ("Task", 0, "insert: path 'Task' must end in an element name"),
        ("Task.note.where(text = 'x')", 0, "insert: path 'Task.note.where(text = 'x')' must end in an element name"),
        ("Task.note.text", 0, "insert: path 'Task.note' must name exactly one element, it names 3"),
        ("Task.owner.display", 0, "insert: path 'Task.owner' must name exactly one element, it names 0"),
        ("Task.status.extension", 0, "insert: 'Task.status' is not an element that can hold 'extension'"),
    ],
)
def test_insert_that_does_not_fit_is_422(path: str, index: int, message: str) -> None:
    operations = operation("insert", path, index={"valueInteger": index}, value={"valueString": "x"})
    assert unprocessable(TASK, operations) == message


# --- delete ----------------------------------------------------------------------------------------


def test_delete_an_element() -> None:
    result = patched(TASK, operation("delete", "Task.for"))
    assert result == {k: v for k, v in TASK.items() if k != "for"}


def test_delete_a_list_item_found_by_where() -> None:
    result = patched(TASK, operation("delete", "Task.identifier.where(system = 'urn:a')"))
    assert result["identifier"] == [{"system": "urn:b", "value": "2"}]


def test_deleting_the_last_item_removes_the_list() -> None:
    result = patched(
        TASK,
        operation("delete", "Task.identifier.where(system = 'urn:a')"),
        operation("delete", "Task.identifier"),
    )
    assert "identifier" not in result


def test_delete_by_index_and_in_a_nested_list() -> None:
    result = patched(PATIENT, operation("delete", "Patient.name[0].given[1]"), operation("delete", "Patient.name[1]"))
    assert result["name"] == [{"family": "Rivera", "given": ["Ana"]}]


def test_delete_a_choice_element_by_its_base_name() -> None:
    result = patched(OBSERVATION, operation("delete", "Observation.value"))
    assert "valueQuantity" not in result


@pytest.mark.parametrize(
    "path",
    ["Task.priority", "Task.note.where(text = 'none')", "Task.note[7]", "Task.owner.display", "Task.note.where(false)"],
)
def test_delete_of_nothing_changes_nothing(path: str) -> None:
    """fhirpatch.html: the path names the element to delete *if found*."""
    assert patched(TASK, operation("delete", path)) == TASK


def test_delete_of_several_elements_is_422() -> None:
    message = unprocessable(TASK, operation("delete", "Task.note"))
    assert message == "delete: path 'Task.note' names 3 elements, at most one may be deleted"


# --- replace ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "value", "changed"),
    [
        ("Task.status", {"valueCode": "accepted"}, {"status": "accepted"}),
        (
            "Task.note.first().text",
            {"valueString": "1st"},
            {"note": [{"text": "1st"}, {"text": "second"}, {"text": "third"}]},
        ),
        (
            "Task.note.last()",
            {"valueAnnotation": {"text": "3rd"}},
            {"note": [{"text": "first"}, {"text": "second"}, {"text": "3rd"}]},
        ),
        (
            "Task.note[1].text",
            {"valueString": "2nd"},
            {"note": [{"text": "first"}, {"text": "2nd"}, {"text": "third"}]},
        ),
        (
            "Task.note.where(text = 'second').text",
            {"valueString": "2nd"},
            {"note": [{"text": "first"}, {"text": "2nd"}, {"text": "third"}]},
        ),
        (
            "Task.identifier.where(system = 'urn:b' and value = '2')",
            {"valueIdentifier": {"system": "urn:c", "value": "3"}},
            {"identifier": [{"system": "urn:a", "value": "1"}, {"system": "urn:c", "value": "3"}]},
        ),
        ("Task.for", {"valueReference": {"reference": "Patient/p2"}}, {"for": {"reference": "Patient/p2"}}),
    ],
)
def test_replace(path: str, value: dict[str, Any], changed: dict[str, Any]) -> None:
    assert patched(TASK, operation("replace", path, value=value)) == {**TASK, **changed}


def test_replace_a_choice_element_by_its_base_name() -> None:
    result = patched(
        OBSERVATION, operation("replace", "Observation.value", value={"valueQuantity": {"value": 71, "unit": "kg"}})
    )
    assert result["valueQuantity"] == {"value": 71, "unit": "kg"}


def test_replace_a_value_in_a_list_of_primitives() -> None:
    result = patched(PATIENT, operation("replace", "Patient.name.first().given.last()", value={"valueString": "Bea"}))
    assert result["name"][0]["given"] == ["Ana", "Bea"]


@pytest.mark.parametrize(
    ("path", "count"),
    [
        ("Task.priority", 0),
        ("Task.note.where(text = 'none')", 0),
        ("Task.note[3]", 0),
        ("Task.note", 3),
        ("Task.identifier.value", 2),
    ],
)
def test_replace_must_name_exactly_one_element(path: str, count: int) -> None:
    message = unprocessable(TASK, operation("replace", path, value={"valueString": "x"}))
    assert message == f"replace: path '{path}' must name exactly one element, it names {count}"


# --- move ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "destination", "expected"),
    [
        (0, 2, ["second", "third", "first"]),
        (2, 0, ["third", "first", "second"]),
        (0, 1, ["second", "first", "third"]),
        (1, 1, ["first", "second", "third"]),
    ],
)
def test_move_within_a_list(source: int, destination: int, expected: list[str]) -> None:
    result = patched(
        TASK, operation("move", "Task.note", source={"valueInteger": source}, destination={"valueInteger": destination})
    )
    assert texts(result) == expected


def test_move_within_a_nested_list() -> None:
    result = patched(
        PATIENT,
        operation(
            "move", "Patient.name.where(use.empty()).given", source={"valueInteger": 1}, destination={"valueInteger": 0}
        ),
    )
    assert result["name"][0]["given"] == ["Beatriz", "Ana"]


@pytest.mark.parametrize(
    ("path", "source", "destination", "message"),
    [
        ("Task.note", 3, 0, "move: 'Task.note' has 3 items"),
        ("Task.note", 0, 3, "move: 'Task.note' has 3 items"),
        ("Task.basedOn", 0, 0, "move: 'Task.basedOn' has 0 items"),
        (
            "Task.note.where(text = 'first')",
            0,
            0,
            "move: path 'Task.note.where(text = 'first')' must end in an element name",
        ),
    ],
)
def test_move_that_does_not_fit_is_422(path: str, source: int, destination: int, message: str) -> None:
    move = operation("move", path, source={"valueInteger": source}, destination={"valueInteger": destination})
    assert unprocessable(TASK, move) == message


# --- paths -----------------------------------------------------------------------------------------


def test_resolve_gives_the_places_in_document_order() -> None:
    found = resolve(PATIENT, "Patient.name.given")
    assert [location.get() for location in found] == ["Ana", "Beatriz"]
    assert [(location.key, location.index, location.type_name) for location in found] == [
        ("given", 0, "string"),
        ("given", 1, "string"),
    ]
    assert [location.get() for location in resolve(PATIENT, "Patient.name.family")] == ["Rivera", "Ortiz"]


def test_an_index_applies_to_the_whole_collection() -> None:
    """FHIRPath ``[n]`` indexes the collection so far, not each parent's list."""
    assert [location.get() for location in resolve(PATIENT, "Patient.name.family[1]")] == ["Ortiz"]
    assert resolve(PATIENT, "Patient.name.given[5]") == []


def test_resolve_where_first_and_last() -> None:
    assert [loc.get() for loc in resolve(TASK, "Task.identifier.where(system = 'urn:b').value")] == ["2"]
    assert [loc.get() for loc in resolve(TASK, "Task.note.first()")] == [{"text": "first"}]
    assert [loc.get() for loc in resolve(TASK, "Task.note.last().text")] == ["third"]
    assert [loc.get() for loc in resolve(TASK, "Task.note.where(text.startsWith('s') or text = 'third')")] == [
        {"text": "second"},
        {"text": "third"},
    ]
    assert resolve(TASK, "Task.owner.first()") == []


def test_resolve_knows_the_types_it_walks_through() -> None:
    [root] = resolve(TASK, "Task")
    assert root.get() is TASK and root.type_name == "Task"
    assert [loc.type_name for loc in resolve(TASK, "Task.note")] == ["Annotation"] * 3
    assert [loc.type_name for loc in resolve(TASK, "Task.for.reference")] == ["string"]
    assert [loc.type_name for loc in resolve(OBSERVATION, "Observation.value")] == ["Quantity"]


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("Task..note", "'Task..note' is not a FHIRPath Patch path"),
        ("Task.note.", "'Task.note.' is not a FHIRPath Patch path"),
        ("Task.note.where(text = 'x'", "is not a FHIRPath Patch path"),
        ("Task.note.where()", "where() in 'Task.note.where()' needs a condition"),
        ("Task.note.where(text = )", "condition 'text =' in 'Task.note.where(text = )' is not valid FHIRPath"),
        ("Task.note.text.substring(1)", "'substring(1)' in 'Task.note.text.substring(1)' is not supported"),
        ("Task.note[-1]", "'note[-1]' in 'Task.note[-1]' is not supported in a FHIRPath Patch path"),
        ("Task.note.exists()", "'exists()' in 'Task.note.exists()' is not supported"),
    ],
)
def test_paths_outside_the_supported_subset_are_400(path: str, message: str) -> None:
    assert message in refused(TASK, operation("delete", path))


def test_a_path_on_another_resource_type_is_422() -> None:
    message = unprocessable(TASK, operation("replace", "Patient.active", value={"valueBoolean": False}))
    assert message == "path 'Patient.active' does not start with the resource type Task"


# --- the document as a whole ---------------------------------------------------------------------


def test_operations_apply_in_order_to_a_copy() -> None:
    parameters = patch(
        operation("add", "Task", name={"valueString": "priority"}, value={"valueCode": "routine"}),
        operation("replace", "Task.priority", value={"valueCode": "stat"}),
        operation("insert", "Task.note", index={"valueInteger": 0}, value={"valueAnnotation": {"text": "zero"}}),
        operation("move", "Task.note", source={"valueInteger": 0}, destination={"valueInteger": 3}),
        operation("delete", "Task.note.where(text = 'first')"),
    )
    before = copy.deepcopy(parameters)
    result = patched(TASK, *parameters["parameter"])
    assert result["priority"] == "stat"
    assert texts(result) == ["second", "third", "zero"]
    assert parameters == before


def test_a_failing_operation_leaves_the_resource_untouched() -> None:
    message = unprocessable(
        TASK,
        operation("replace", "Task.status", value={"valueCode": "accepted"}),
        operation("delete", "Task.note.where(text = 'first')"),
        operation("replace", "Task.priority", value={"valueCode": "stat"}),
    )
    assert message == "replace: path 'Task.priority' must name exactly one element, it names 0"


def test_the_result_shares_nothing_with_the_resource_or_the_patch() -> None:
    value = {"valueAnnotation": {"text": "new"}}
    parameters = patch(operation("add", "Task", name={"valueString": "note"}, value=value))
    resource = copy.deepcopy(TASK)
    result = apply_fhirpath_patch(resource, parameters)
    result["note"][0]["text"] = "changed"
    result["note"][-1]["text"] = "changed too"
    assert resource == TASK
    assert value == {"valueAnnotation": {"text": "new"}}


def test_errors_are_fhir_errors_with_their_status() -> None:
    with pytest.raises(FhirError) as bad_document:
        apply_fhirpath_patch(TASK, patch())
    assert type(bad_document.value) is InvalidRequest
    with pytest.raises(FhirError) as does_not_apply:
        apply_fhirpath_patch(TASK, patch(operation("replace", "Task.priority", value={"valueCode": "stat"})))
    assert type(does_not_apply.value) is Unprocessable


# --- current behaviour that reads otherwise in fhirpatch.html ----------------------------------------


def test_replace_of_a_choice_element_takes_the_new_datatype() -> None:
    """fhirpatch.html: replace puts the new value in place; for ``value[x]`` that is the new datatype's key."""
    result = patched(OBSERVATION, operation("replace", "Observation.value", value={"valueString": "heavy"}))
    assert result["valueString"] == "heavy"
    assert "valueQuantity" not in result


def test_add_to_a_choice_element_names_its_datatype() -> None:
    unvalued = {k: v for k, v in OBSERVATION.items() if not k.startswith("value")}
    result = patched(
        unvalued, operation("add", "Observation", name={"valueString": "value"}, value={"valueString": "x"})
    )
    assert result["valueString"] == "x" and "value" not in result
    message = unprocessable(
        OBSERVATION, operation("add", "Observation", name={"valueString": "value"}, value={"valueString": "x"})
    )
    assert "already has a value (use replace)" in message


def test_insert_and_move_on_a_single_element_are_422() -> None:
    """insert and move work on lists (fhirpatch.html); a non-repeating element is refused, not wrapped in one."""
    move = operation("move", "Task.status", source={"valueInteger": 0}, destination={"valueInteger": 0})
    assert unprocessable(TASK, move) == "move: 'Task.status' is a single element, not a list"
    insert = operation("insert", "Task.status", index={"valueInteger": 0}, value={"valueCode": "draft"})
    assert unprocessable(TASK, insert) == "insert: 'Task.status' is a single element, not a list"
    absent = operation("insert", "Task.priority", index={"valueInteger": 0}, value={"valueCode": "urgent"})
    assert unprocessable(TASK, absent) == "insert: 'Task.priority' is a single element, not a list"


def test_parts_of_a_complex_value_are_not_arrays_and_repeated_names_overwrite() -> None:
    """A value given as parts becomes one object per name: a repeating child (``telecom``) is not put in an
    array, and two parts of the same name keep only the last."""
    value = {
        "part": [
            {"name": "telecom", "valueContactPoint": {"system": "phone", "value": "1"}},
            {"name": "telecom", "valueContactPoint": {"system": "email", "value": "a@example.org"}},
        ]
    }
    result = patched(PATIENT, operation("add", "Patient", name={"valueString": "contact"}, value=value))
    assert result["contact"] == [{"telecom": {"system": "email", "value": "a@example.org"}}]


def test_a_base_name_matches_any_element_it_prefixes() -> None:
    """Choice elements are found by prefix without checking that the name is a choice element, so
    ``Task.reason`` (not an element of R4 Task) finds ``reasonCode`` and ``reasonReference``."""
    task = {**TASK, "reasonCode": {"text": "why"}, "reasonReference": {"reference": "Condition/c1"}}
    assert [loc.key for loc in resolve(task, "Task.reason")] == ["reasonCode", "reasonReference"]
    assert unprocessable(task, operation("delete", "Task.reason")).startswith("delete: path 'Task.reason' names 2")
