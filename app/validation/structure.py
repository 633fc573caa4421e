"""Structural validation with the fhir.resources R4B models.

The R4B structures of the resources this server is about are those of R4
(hl7.org/fhir/R4B/diff.html); fhirVersion 4.0.1 is what goes on the wire.
A body the model walk (``app.validation.model_walk``) proves valid is not
built as a model; any other is, and pydantic's error locations become
FHIRPath-like element paths, so a client sees
``CarePlan.activity[0].detail.status`` rather than a Python tuple.

Each type's model module is imported when a body of that type (or one
contained in it) is first checked, not at start-up; what it builds is then
frozen out of the garbage collector's sight (``app.heap``).
"""

from __future__ import annotations

import importlib.util
import sys
from functools import cache
from typing import Any

from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError

from app.heap import freeze_new_modules
from app.validation.model_walk import ModelWalk

MODELS_PACKAGE = "fhir.resources.R4B"


def has_model(resource_type: str) -> bool:
    """Whether fhir.resources has an R4B model of the type (its module exists; it is not imported)."""
    return importlib.util.find_spec(f"{MODELS_PACKAGE}.{resource_type.lower()}") is not None


@cache
def model_class(resource_type: str) -> Any:
    return get_fhir_model_class(resource_type)


def format_location(resource_type: str, loc: tuple[int | str, ...]) -> str:
    path = resource_type
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part.startswith("function-after") or part.startswith("function-"):
            continue
        else:
            path += f".{part}"
    return path


def _message(error: Any) -> str:
    kind = error.get("type")
    if kind == "extra_forbidden":
        return "unknown element"
    if kind == "missing":
        return "required element is missing"
    msg = str(error.get("msg", "invalid value"))
    return msg.removeprefix("Value error, ")


def structural_problems(
    resource_type: str, body: dict[str, Any], walk: ModelWalk | None = None
) -> list[tuple[str, str]]:
    """Return (message, path) per structural problem; empty when the body is valid. With ``walk``, a
    body it proves valid is not built as a model."""
    modules = len(sys.modules)
    try:
        return _problems(resource_type, body, walk)
    finally:
        freeze_new_modules(modules)


def _problems(resource_type: str, body: dict[str, Any], walk: ModelWalk | None) -> list[tuple[str, str]]:
    try:
        model = model_class(resource_type)
        if walk is not None and walk.proves(model, body):
            return []
        model.model_validate(body)
    except ValidationError as exc:
        return [(_message(err), format_location(resource_type, err["loc"])) for err in exc.errors()]
    except KeyError:  # fhir_core looks nested resource types up in a table
        return [("unknown or invalid nested resource type", resource_type)]
    except RecursionError:
        return [("the resource is nested too deeply", resource_type)]
    except (ValueError, TypeError, AttributeError, IndexError):  # model code failing on odd input: no details
        return [("the resource does not have the structure of its type", resource_type)]
    return []
