"""Regenerate ``capability/compartments.json`` from the official R4 CompartmentDefinitions.

Output: compartment type -> resource type -> the search parameters that put
a resource of that type in the compartment (hl7.org/fhir/R4/compartmentdefinition.html).
Types listed without parameters are not in the compartment and are left out
(the R4 Patient compartment lists Task that way).

Usage: ``python capability/build_compartments.py ../shared/fhir-r4``
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

OUTPUT = Path(__file__).with_name("compartments.json")
CODES = ("patient", "practitioner", "encounter", "relatedperson", "device")


def main(source: str) -> None:
    compartments: dict[str, dict[str, list[str]]] = {}
    for code in CODES:
        definition = json.loads((Path(source) / f"compartmentdefinition-{code}.json").read_text())
        compartments[definition["code"]] = {
            entry["code"]: entry["param"] for entry in definition["resource"] if entry.get("param")
        }
    OUTPUT.write_text(json.dumps(compartments, indent=1, sort_keys=True) + "\n")
    print(f"{OUTPUT}: {', '.join(f'{k} ({len(v)} types)' for k, v in compartments.items())}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "../shared/fhir-r4")
