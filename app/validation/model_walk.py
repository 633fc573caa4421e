"""A proof that a body satisfies its fhir.resources R4B model, made without building the model.

Building the model is the dearest step of a create: pydantic constructs one
object per element, and fhir_core runs Python validators on each of them, about
0.5 ms for a 1.4 KB CarePlan, a third of the server's CPU per create
(BENCHMARKS.md, "Structure checked by walking the models' definitions"). For a
dict, the model's checks are:

* every property is one of the element's fields (``extra="forbid"``);
* a complex element is an object, or an array of objects where it repeats, and
  satisfies its own type's model;
* a primitive value passes its field's pydantic type (fhir_core's ``Id``,
  ``Code``, ``DateTime``, ``Uri`` and so on: patterns, ranges, real dates);
* required elements are present (pydantic-required fields, and the primitives
  of minimum cardinality 1, hl7.org/fhir/R4/extensibility.html#Special-Case);
* of a choice element ``name[x]`` at most one type is given, and one when the
  element is required (hl7.org/fhir/R4/formats.html#choice).

``ModelWalk`` checks the same from the models' own field definitions: the
field tables, required fields and choice groups come from the model classes,
and each primitive value goes through a ``TypeAdapter`` of its field's own
annotation, so formats are judged by fhir.resources' own types. It walks
dicts and calls no validator per element, about a sixth of the cost.

It only ever proves. A body that uses what the walk does not model (contained
resources, ``_name`` primitive extensions, ``fhir_comments``, Python field
names instead of JSON names, a nested ``resourceType``) or that breaks a rule
is "not proven", and the caller builds the model, whose errors the client sees.
So the walk makes a valid create cheaper and can never accept what the model
refuses; tests/validation/test_model_walk.py checks that over the official
examples and mutations of them.
"""

from __future__ import annotations

import importlib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Final

from fhir_core.constraints import FHIR_TYPES_MAPS
from fhir_core.types import FhirBase, FhirElementOrResourceBase
from pydantic import TypeAdapter

REMEMBERED_IN_ALL: Final = 65_536  # valid strings remembered across every field: 15 MB if ASCII, 42 at most
LONGEST_REMEMBERED: Final = 128  # characters: codes, URLs, ids and dates, not texts or attachments' data


class PrimitiveCheck:
    """A primitive field's pydantic type, as a validator built on first use: a model has dozens of
    primitive fields, most never sent, and each adapter takes milliseconds to build.

    A string's validity in a field is a function of the string alone, and most strings come back in
    every body of a kind: codes, code systems, profile and extension URLs, dates. So strings found valid
    are remembered per field, and found valid again for a set lookup instead of about 2 us through
    pydantic (a CarePlan has about 39 primitives; its walk took 35 us against 55). Only exact ``str``s
    (``True``, ``1`` and ``1.0`` are equal keys, but not equally valid), only short ones, and only the
    first ``REMEMBERED_IN_ALL`` across every field of every model, so that no run of bodies can make
    what is kept grow past that."""

    __slots__ = ("_adapter", "_valid", "annotation")
    remembered: ClassVar[int] = 0  # strings kept so far, by every field

    def __init__(self, annotation: Any) -> None:
        self.annotation = annotation
        self._adapter: TypeAdapter[Any] | None = None
        self._valid: set[str] = set()

    def validate(self, value: Any) -> None:
        """Raise what pydantic raises for ``value`` in this field (``ValidationError``, or a type's own error)."""
        valid = self._valid
        kept = type(value) is str and len(value) <= LONGEST_REMEMBERED
        if kept and value in valid:
            return
        adapter = self._adapter
        if adapter is None:
            adapter = self._adapter = TypeAdapter(self.annotation)
        adapter.validate_python(value)
        if kept and PrimitiveCheck.remembered < REMEMBERED_IN_ALL:
            valid.add(value)
            PrimitiveCheck.remembered += 1


@dataclass(frozen=True, slots=True)
class FieldRule:
    """One JSON property of an element: a nested model, any resource (by its ``resourceType``, as
    ``contained``), or a primitive's validator; none of them: not walked."""

    repeats: bool
    model: type[Any] | None = None
    resource: type[FhirElementOrResourceBase] | None = None
    primitive: PrimitiveCheck | None = None


@dataclass(frozen=True, slots=True)
class ModelRules:
    """What a model checks on an object, as tables: properties, required names, choice groups."""

    fields: Mapping[str, FieldRule]
    required: tuple[str, ...]  # JSON names that must hold a value
    choices: tuple[tuple[tuple[str, ...], bool], ...]  # (JSON names of one name[x], whether one is required)


def _without_none(annotation: Any) -> Any:
    """``X`` of ``Optional[X]``; ``annotation`` itself otherwise."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        members = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        if len(members) == 1:
            return members[0]
    return annotation


def field_rule(field: Any) -> FieldRule:
    """The rule of one pydantic field of a fhir.resources model."""
    inner = _without_none(field.annotation)
    repeats = typing.get_origin(inner) is list
    if repeats:
        inner = _without_none(typing.get_args(inner)[0])
    if isinstance(inner, type) and issubclass(inner, FhirBase):
        if issubclass(inner, FhirElementOrResourceBase):
            # any resource (contained, Bundle.entry.resource); where any Element is allowed: not walked
            return (
                FieldRule(repeats, resource=inner)
                if inner.get_model_klass().__name__ == "Resource"
                else FieldRule(repeats)
            )
        return FieldRule(repeats, model=inner.get_model_klass())
    annotation = typing.Annotated[(field.annotation, *field.metadata)] if field.metadata else field.annotation
    return FieldRule(repeats, primitive=PrimitiveCheck(annotation))


def model_rules(model: type[Any]) -> ModelRules:
    """The tables of ``model``, read from its field definitions (built once per model)."""
    fields: dict[str, FieldRule] = {}
    required: list[str] = []
    json_names: dict[str, str] = {}
    for name, field in model.model_fields.items():
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        if not extra.get("element_property"):  # fhir_comments and the ``_name`` extension fields: not walked
            continue
        json_name = field.alias or name
        json_names[name] = json_name
        fields[json_name] = field_rule(field)
        if field.is_required():
            required.append(json_name)
    # the generated methods list constants and read nothing of the instance
    for element_name, _extension in model.get_required_fields(None):
        required.append(element_name)
    choices = []
    for names in model.get_one_of_many_fields(None).values():
        first = model.model_fields[names[0]].json_schema_extra
        choices.append((tuple(json_names.get(name, name) for name in names), first.get("one_of_many_required") is True))
    return ModelRules(fields, tuple(dict.fromkeys(required)), tuple(choices))


class ModelWalk:
    """Proves bodies valid against their R4B models; the tables of each model are built on first use."""

    def __init__(self) -> None:
        self._rules: dict[type[Any], ModelRules] = {}

    def rules(self, model: type[Any]) -> ModelRules:
        found = self._rules.get(model)
        if found is None:
            found = self._rules[model] = model_rules(model)
        return found

    def proves(self, model: type[Any], body: dict[str, Any]) -> bool:
        """True when ``model.model_validate(body)`` is sure to succeed; False when it may not."""
        if body.get("resourceType") != model.__resource_type__:
            return False
        try:
            return self._object(self.rules(model), body, "resourceType")
        except Exception:  # a primitive type failing on odd input: the model will say what is wrong
            return False

    def _resource(self, declared: type[FhirElementOrResourceBase], value: Any) -> bool:
        """A resource where any resource may stand: its model is named by its ``resourceType``, as
        fhir_core's ``FhirElementOrResourceBase`` finds it."""
        if type(value) is not dict or type(value.get("resourceType")) is not str:
            return False
        module, _, name = FHIR_TYPES_MAPS[declared._prefix + value["resourceType"] + "Type"].rpartition(".")
        model = getattr(importlib.import_module(module), name)
        if not model.has_resource_base():
            return False
        return self._object(self.rules(model), value, "resourceType")

    def _object(self, rules: ModelRules, value: dict[str, Any], own_key: str | None = None) -> bool:
        fields = rules.fields
        for key, item in value.items():
            rule = fields.get(key)
            if rule is None:
                if key == own_key:
                    continue
                return False
            if item is None:
                return False
            if rule.model is not None:
                nested = self.rules(rule.model)
                if rule.repeats:
                    if type(item) is not list:
                        return False
                    for element in item:
                        if type(element) is not dict or not self._object(nested, element):
                            return False
                elif type(item) is not dict or not self._object(nested, item):
                    return False
            elif rule.resource is not None:
                if rule.repeats and type(item) is not list:
                    return False
                for element in item if rule.repeats else [item]:
                    if not self._resource(rule.resource, element):
                        return False
            elif rule.primitive is not None:
                rule.primitive.validate(item)
            else:
                return False
        for key in rules.required:
            if value.get(key) is None:
                return False
        for names, required in rules.choices:
            given = sum(1 for name in names if value.get(name) is not None)
            if given > 1 or (required and given == 0):
                return False
        return True


__all__ = ["FieldRule", "ModelRules", "ModelWalk", "PrimitiveCheck", "field_rule", "model_rules"]
