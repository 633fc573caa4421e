"""Regenerate ``capability/elements.json``: the JSON shape of every R4 type, from the official definitions.

fhir.resources validates with pydantic in lax mode, so it turns ``"active":
"yes"`` into ``true`` and ``"multipleBirthInteger": "3"`` into ``3``, and it
accepts ``null``, ``{}`` and ``[]``. The server checks the JSON as sent
against this table first (``app.validation.json_rules``):

* ``types``: for every type (resource, complex datatype, or backbone element
  named by its path), each JSON property with ``[child type, repeats]``.
  Choice elements are expanded (``value[x]`` -> ``valueQuantity``, ...);
  ``contentReference`` elements (``Questionnaire.item.item``) name the
  element they reuse. ``Element`` (the ``_name`` objects that carry a
  primitive's id and extensions) is added by hand: R4 ships no
  StructureDefinition for it.
* ``kinds``: each primitive type's JSON form (json.html#primitive): boolean,
  integer (with its range), decimal, xhtml, or string.

Usage: ``python capability/build_elements.py ../shared/fhir-r4/definitions``
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

OUTPUT = Path(__file__).with_name("elements.json")
SYSTEM_PREFIX = "http://hl7.org/fhirpath/System."
FHIR_TYPE_EXTENSION = "http://hl7.org/fhir/StructureDefinition/structuredefinition-fhir-type"
KINDS = {
    "boolean": "boolean",
    "integer": "integer",
    "positiveInt": "positiveInt",
    "unsignedInt": "unsignedInt",
    "decimal": "decimal",
    "xhtml": "xhtml",
}


def _type_code(type_entry: dict[str, Any]) -> str:
    """The FHIR type of an element; ``System.String`` ids and urls carry theirs in an extension."""
    code: str = type_entry["code"]
    if code.startswith(SYSTEM_PREFIX):
        for extension in type_entry.get("extension", []):
            if extension.get("url") == FHIR_TYPE_EXTENSION:
                return str(extension["valueUrl"] if "valueUrl" in extension else extension["valueString"])
        return {"String": "string", "Boolean": "boolean", "Integer": "integer", "Decimal": "decimal"}.get(
            code.removeprefix(SYSTEM_PREFIX), "string"
        )
    return code


def build(structures: dict[str, Any]) -> dict[str, Any]:
    types: dict[str, dict[str, list[Any]]] = {
        "Element": {"id": ["string", False], "extension": ["Extension", True]},
    }
    kinds: dict[str, str] = {}
    for entry in structures["entry"]:
        sd = entry["resource"]
        if sd["kind"] == "primitive-type":
            kinds[sd["type"]] = KINDS.get(sd["type"], "string")
            continue
        if sd["kind"] not in ("resource", "complex-type"):
            continue
        root = sd["type"]
        elements = sd["snapshot"]["element"]
        parents = {el["path"].rsplit(".", 1)[0] for el in elements if "." in el["path"]}
        types.setdefault(root, {})
        for el in elements:
            path = el["path"]
            if "." not in path:
                continue
            parent, name = path.rsplit(".", 1)
            repeats = el.get("max") != "0" and el.get("max") != "1"
            codes = [_type_code(t) for t in el.get("type", [])]
            owner = types.setdefault(parent, {})
            if "contentReference" in el:
                owner[name] = [el["contentReference"].lstrip("#"), repeats]
            elif name.endswith("[x]"):
                for code in codes:
                    owner[name[:-3] + code[0].upper() + code[1:]] = [code, repeats]
            else:
                owner[name] = [path if path in parents else codes[0], repeats]
    return {
        "source": "hl7.fhir.r4.examples 4.0.1 (StructureDefinitions)",
        "kinds": dict(sorted(kinds.items())),
        "types": dict(sorted(types.items())),
    }


def main(definitions_dir: str) -> None:
    structures = json.loads((Path(definitions_dir) / "structure-definitions.json").read_text())
    table = build(structures)
    OUTPUT.write_text(json.dumps(table, separators=(",", ":")) + "\n")
    print(f"{OUTPUT}: {len(table['types'])} types, {len(table['kinds'])} primitive kinds")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "../shared/fhir-r4/definitions")
