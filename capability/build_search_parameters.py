"""Regenerate ``capability/search_parameters.json`` from the official R4 SearchParameters.

Input: the spec's ``search-parameters.json`` (Bundle ``searchParams`` from the
HL7 package hl7.fhir.r4.examples 4.0.1). Output: one entry per parameter with
what the server needs (url, code, type, description, targets, modifiers,
comparators, components) and its FHIRPath expression split per base resource
type, because shared parameters such as ``patient`` carry one union
expression for 30 types (``AllergyIntolerance.patient | CarePlan.subject...``)
and each type should evaluate only its own part.

Usage (with the project installed, e.g. ``.venv/bin/python``):
``python capability/build_search_parameters.py ../shared/fhir-r4/search-parameters.json``
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from app.search.definitions import reduce as reduce_definition  # the same reduction the server applies

OUTPUT = Path(__file__).with_name("search_parameters.json")
# Known errors in the 4.0.1 definitions, corrected as R4B/R5 did: DocumentReference-relationship
# gives "code" to the reference component and "target" to the token one.
COMPONENT_ERRATA = {
    "http://hl7.org/fhir/SearchParameter/DocumentReference-relationship": [
        {"definition": "http://hl7.org/fhir/SearchParameter/DocumentReference-relatesto", "expression": "target"},
        {"definition": "http://hl7.org/fhir/SearchParameter/DocumentReference-relation", "expression": "code"},
    ]
}


def reduce(parameter: dict[str, Any]) -> dict[str, Any]:
    out = reduce_definition(parameter)
    if parameter["url"] in COMPONENT_ERRATA:
        out["component"] = COMPONENT_ERRATA[parameter["url"]]
    return out


def main(source: str) -> None:
    bundle = json.loads(Path(source).read_text())
    parameters = [reduce(entry["resource"]) for entry in bundle["entry"]]
    parameters.sort(key=lambda p: p["url"])
    OUTPUT.write_text(json.dumps(parameters, indent=1, ensure_ascii=False) + "\n")
    print(f"{OUTPUT}: {len(parameters)} search parameters")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "../shared/fhir-r4/search-parameters.json")
