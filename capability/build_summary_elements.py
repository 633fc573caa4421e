"""Regenerate ``capability/summary_elements.json``: per resource type, its top-level elements that
are in the summary (``isSummary``) and those that are mandatory (``min > 0``), for ``_summary``
(hl7.org/fhir/R4/search.html#summary). Choice elements keep their ``[x]`` suffix.

Usage: ``python capability/build_summary_elements.py ../shared/fhir-r4/definitions``
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

OUTPUT = Path(__file__).with_name("summary_elements.json")


def main(definitions_dir: str) -> None:
    bundle = json.loads((Path(definitions_dir) / "structure-definitions.json").read_text())
    out: dict[str, dict[str, list[str]]] = {}
    for entry in bundle["entry"]:
        sd = entry["resource"]
        if sd["kind"] != "resource" or sd.get("abstract"):
            continue
        summary, mandatory = [], []
        for element in sd["snapshot"]["element"]:
            parts = element["path"].split(".")
            if len(parts) != 2:
                continue
            if element.get("isSummary"):
                summary.append(parts[1])
            if element.get("min", 0) > 0:
                mandatory.append(parts[1])
        out[sd["type"]] = {"summary": summary, "mandatory": mandatory}
    OUTPUT.write_text(json.dumps(out, indent=0, sort_keys=True) + "\n")
    print(f"{OUTPUT}: {len(out)} resource types")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "../shared/fhir-r4/definitions")
