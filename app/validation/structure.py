"""Structural validation with the fhir.resources R4B models.

The R4B structures of the resources this server is about are those of R4
(hl7.org/fhir/R4B/diff.html); fhirVersion 4.0.1 is what goes on the wire.
A body the model walk (``app.validation.model_walk``) proves valid is not
built as a model; any other is, and pydantic's error locations become
FHIRPath-like element paths, so a client sees
``CarePlan.activity[0].detail.status`` rather than a Python tuple.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError

from app.validation.model_walk import ModelWalk


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
