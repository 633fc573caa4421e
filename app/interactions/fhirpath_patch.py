"""FHIRPath Patch (hl7.org/fhir/R4/fhirpatch.html) on JSON resources: pure, no I/O.

A patch is a ``Parameters`` resource with one ``operation`` parameter per
change (``add``, ``insert``, ``delete``, ``replace``, ``move``), applied in
order to a copy of the resource. Paths are the subset of FHIRPath that
names places rather than computes values: ``Type.element``, ``[n]``,
``.where(<condition>)`` (the condition evaluated by fhirpathpy on each
candidate), ``.first()``, ``.last()`` and choice elements by their base name
(``Observation.value`` finds ``valueQuantity``).

Errors: a malformed patch document raises ``InvalidRequest`` (400); a patch
that cannot be applied to this resource raises ``Unprocessable`` (422).
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from typing import Any

from app.errors import InvalidRequest, Unprocessable
from app.search.fhirpath import cached_condition, explain, split_top_level
from app.validation.json_rules import load_element_table

OPERATIONS = frozenset({"add", "insert", "delete", "replace", "move"})
_INDEXED = re.compile(r"^(?P<name>[A-Za-z][A-Za-z0-9_]*)\[(?P<index>\d+)\]$")
_FUNCTION = re.compile(r"^(?P<name>where|first|last)\((?P<argument>.*)\)$", re.DOTALL)
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


@dataclass(frozen=True, slots=True)
class Location:
    """Where a value lives: ``container[key]`` or, in a list, ``container[key][index]``; ``type_name``
    is the FHIR type of the value there (a backbone element by its path), when the element table knows it."""

    container: dict[str, Any]
    key: str
    index: int | None
    type_name: str | None = None

    def get(self) -> Any:
        value = self.container[self.key]
        return value if self.index is None else value[self.index]


def _child_type(parent: str | None, key: str, value: Any) -> str | None:
    if parent is None:
        return None
    child = load_element_table().child_type(parent, key)
    if child == "Resource":  # contained resources and the like: the value says what it is
        return value.get("resourceType") if isinstance(value, dict) else None
    return child


def _split_steps(path: str) -> list[str]:
    """Split on dots outside parentheses and quotes."""
    steps, balanced = split_top_level(path, ".")
    if not balanced or any(not s.strip() for s in steps):
        raise InvalidRequest(f"'{path}' is not a FHIRPath Patch path")
    return [s.strip() for s in steps]


def _child_keys(node: dict[str, Any], name: str) -> list[str]:
    if name in node:
        return [name]
    # a choice element named without its type: value -> valueQuantity
    return [k for k in node if k.startswith(name) and k[len(name) : len(name) + 1].isupper()]


def _children(locations: list[Location], name: str) -> list[Location]:
    found: list[Location] = []
    for location in locations:
        node = location.get()
        if not isinstance(node, dict):
            continue
        for key in _child_keys(node, name):
            value = node[key]
            if isinstance(value, list):
                found.extend(
                    Location(node, key, i, _child_type(location.type_name, key, item)) for i, item in enumerate(value)
                )
            else:
                found.append(Location(node, key, None, _child_type(location.type_name, key, value)))
    return found


def resolve(resource: dict[str, Any], path: str) -> list[Location]:
    """The places ``path`` names in ``resource`` (document order)."""
    steps = _split_steps(path)
    if steps[0] != resource.get("resourceType"):
        raise Unprocessable(f"path '{path}' does not start with the resource type {resource.get('resourceType')}")
    holder = {"root": resource}
    locations = [Location(holder, "root", None, steps[0])]
    for step in steps[1:]:
        function = _FUNCTION.match(step)
        indexed = _INDEXED.match(step)
        if function:
            kind, argument = function.group("name"), function.group("argument").strip()
            if kind == "first":
                locations = locations[:1]
            elif kind == "last":
                locations = locations[-1:]
            else:
                if not argument:
                    raise InvalidRequest(f"where() in '{path}' needs a condition")
                locations = [loc for loc in locations if _holds(loc.get(), argument, path)]
        elif indexed:
            matches = _children(locations, indexed.group("name"))
            index = int(indexed.group("index"))
            locations = matches[index : index + 1]
        elif _NAME.match(step):
            locations = _children(locations, step)
        else:
            raise InvalidRequest(f"'{step}' in '{path}' is not supported in a FHIRPath Patch path")
    return locations


def _holds(item: Any, condition: str, path: str) -> bool:
    """The ``where()`` condition on one candidate: compiled once per condition, not per candidate."""
    try:
        result = cached_condition(condition)(item)
    except Exception as exc:  # fhirpathpy raises plain exceptions for bad expressions
        raise InvalidRequest(
            f"condition '{condition[:200]}' in '{path[:200]}' is not valid FHIRPath: {explain(exc)}"
        ) from None
    return bool(result == [True])


def _value_type(parameter: dict[str, Any]) -> str | None:
    """The datatype a ``value[x]`` part names (``valueString`` -> ``String``); None for nested parts."""
    for key in parameter:
        if key.startswith("value") and key != "value":
            return key[len("value") :]
    return None


def _value(parameter: dict[str, Any]) -> Any:
    """A ``value[x]`` of a part, or a complex value given as nested parts."""
    for key, value in parameter.items():
        if key.startswith("value") and key != "value":
            return copy.deepcopy(value)
    parts = parameter.get("part")
    if isinstance(parts, list) and parts:
        built: dict[str, Any] = {}
        for part in parts:
            name = part.get("name") if isinstance(part, dict) else None
            if not isinstance(name, str):
                raise InvalidRequest("a part of a complex patch value has no name")
            built[name] = _value(part)
        return built
    raise InvalidRequest(f"patch value '{parameter.get('name')}' has no value[x] and no parts")


@dataclass(frozen=True, slots=True)
class Operation:
    type: str
    path: str
    name: str | None = None
    value: Any = None
    value_type: str | None = None  # the datatype of a value[x] (a choice element takes it as its suffix)
    index: int | None = None
    source: int | None = None
    destination: int | None = None


def parse_patch(parameters: Any) -> list[Operation]:
    """``Parameters`` -> operations; InvalidRequest (400) for anything malformed."""
    if not isinstance(parameters, dict) or parameters.get("resourceType") != "Parameters":
        raise InvalidRequest("a FHIRPath Patch is a Parameters resource")
    operations = []
    listed = parameters.get("parameter", [])
    if not isinstance(listed, list):
        raise InvalidRequest("Parameters.parameter must be an array of operations", ["Parameters.parameter"])
    for position, parameter in enumerate(listed):
        where = f"Parameters.parameter[{position}]"
        if not isinstance(parameter, dict) or parameter.get("name") != "operation":
            raise InvalidRequest(f"{where} is not an 'operation'", [where])
        raw_parts = parameter.get("part", [])
        if not isinstance(raw_parts, list) or not all(isinstance(p, dict) for p in raw_parts):
            raise InvalidRequest(f"{where}.part must be an array of parts", [f"{where}.part"])
        parts = {p.get("name"): p for p in raw_parts if isinstance(p.get("name"), str)}
        kind = parts.get("type", {}).get("valueCode")
        path = parts.get("path", {}).get("valueString")
        if not isinstance(kind, str) or kind not in OPERATIONS:
            raise InvalidRequest(f"{where}: type must be one of {', '.join(sorted(OPERATIONS))}", [where])
        if not isinstance(path, str) or not path:
            raise InvalidRequest(f"{where}: an operation needs a path", [where])

        def integer(name: str, where: str = where, parts: dict[str, Any] = parts) -> int | None:
            if name not in parts:
                return None
            value = parts[name].get("valueInteger")
            if type(value) is not int or value < 0:
                raise InvalidRequest(f"{where}: {name} must be a non-negative integer", [where])
            return value

        name = parts.get("name", {}).get("valueString")
        if name is not None and (not isinstance(name, str) or not _NAME.match(name)):
            raise InvalidRequest(f"{where}: name must be an element name", [where])
        operation = Operation(
            kind,
            path,
            name=name,
            value=_value(parts["value"]) if "value" in parts else None,
            value_type=_value_type(parts["value"]) if "value" in parts else None,
            index=integer("index"),
            source=integer("source"),
            destination=integer("destination"),
        )
        needs = {
            "add": ("name", "value"),
            "insert": ("value", "index"),
            "replace": ("value",),
            "move": ("source", "destination"),
            "delete": (),
        }[kind]
        missing = [n for n in needs if getattr(operation, n) is None]
        if missing:
            article = "an" if kind[:1] in ("a", "e", "i", "o", "u") else "a"
            raise InvalidRequest(f"{where}: {article} {kind} operation needs {', '.join(missing)}", [where])
        operations.append(operation)
    if not operations:
        raise InvalidRequest("the patch has no operations")
    return operations


def _one(resource: dict[str, Any], path: str, kind: str) -> Location:
    locations = resolve(resource, path)
    if len(locations) != 1:
        raise Unprocessable(f"{kind}: path '{path}' must name exactly one element, it names {len(locations)}")
    return locations[0]


def _collection(resource: dict[str, Any], path: str, kind: str) -> list[Any]:
    """The list a path names (insert and move work on a collection)."""
    *parent, name = _split_steps(path)
    if not parent or not _NAME.match(name):
        raise Unprocessable(f"{kind}: path '{path}' must end in an element name")
    location = _one(resource, ".".join(parent), kind)
    holder = location.get()
    if not isinstance(holder, dict):
        raise Unprocessable(f"{kind}: '{'.'.join(parent)}' is not an element that can hold '{name}'")
    repeats = load_element_table().repeats(location.type_name or "", name)
    current = holder.get(name)
    if repeats is False or (current is not None and not isinstance(current, list)):
        raise Unprocessable(f"{kind}: '{path}' is a single element, not a list")
    items: list[Any] = holder.setdefault(name, [])
    return items


def _element_key(type_name: str | None, name: str, value_type: str | None) -> str:
    """The JSON key for element ``name`` holding a value of ``value_type``: ``name`` itself, or for a
    choice element (``value[x]``) ``name`` with the datatype appended (``valueString``)."""
    table = load_element_table()
    if type_name is None or value_type is None or table.child_type(type_name, name) is not None:
        return name
    typed = name + value_type[:1].upper() + value_type[1:]
    return typed if table.child_type(type_name, typed) is not None else name


def _replaced_key(path: str, key: str, value_type: str | None) -> str:
    """A choice element named by its base (``Observation.value``, stored as ``valueQuantity``) and replaced
    by a value of another datatype is stored under that datatype's key (fhirpatch.html: replace)."""
    name = _split_steps(path)[-1]
    if value_type is None or not _NAME.match(name) or key == name or not key.startswith(name):
        return key
    return name + value_type[:1].upper() + value_type[1:]


def apply_operation(resource: dict[str, Any], operation: Operation) -> None:
    kind, path = operation.type, operation.path
    if kind == "add":
        location = _one(resource, path, kind)
        target = location.get()
        if not isinstance(target, dict):
            raise Unprocessable(f"add: '{path}' is not an element that can have children")
        assert operation.name is not None
        key = _element_key(location.type_name, operation.name, operation.value_type)
        existing = target.get(key)
        if key != operation.name and any(k in target for k in _child_keys(target, operation.name)):
            raise Unprocessable(f"add: '{path}.{operation.name}' already has a value (use replace)")
        repeats = load_element_table().repeats(location.type_name or "", key)
        if existing is None:  # a repeating element starts as a list of one (fhirpatch.html: add appends)
            target[key] = [operation.value] if repeats else operation.value
        elif isinstance(existing, list):
            existing.append(operation.value)
        else:
            raise Unprocessable(f"add: '{path}.{operation.name}' already has a value (use replace)")
    elif kind == "replace":
        location = _one(resource, path, kind)
        if location.index is None:
            key = _replaced_key(path, location.key, operation.value_type)
            if key != location.key:  # a choice element takes the new value's datatype (value[x])
                del location.container[location.key]
            location.container[key] = operation.value
        else:
            location.container[location.key][location.index] = operation.value
    elif kind == "delete":
        locations = resolve(resource, path)
        if len(locations) > 1:
            raise Unprocessable(f"delete: path '{path}' names {len(locations)} elements, at most one may be deleted")
        if locations:
            location = locations[0]
            if location.index is None:
                del location.container[location.key]
            else:
                items = location.container[location.key]
                del items[location.index]
                if not items:
                    del location.container[location.key]
    elif kind == "insert":
        items = _collection(resource, path, kind)
        assert operation.index is not None
        if operation.index > len(items):
            raise Unprocessable(f"insert: index {operation.index} is beyond the {len(items)} items of '{path}'")
        items.insert(operation.index, operation.value)
    else:  # move
        items = _collection(resource, path, kind)
        assert operation.source is not None and operation.destination is not None
        if operation.source >= len(items) or operation.destination >= len(items):
            raise Unprocessable(f"move: '{path}' has {len(items)} items")
        items.insert(operation.destination, items.pop(operation.source))


def apply_fhirpath_patch(resource: dict[str, Any], parameters: Any) -> dict[str, Any]:
    """A patched copy of ``resource``; the original is left untouched."""
    operations = parse_patch(parameters)
    patched = copy.deepcopy(resource)
    for operation in operations:
        apply_operation(patched, operation)
    return patched
