"""Regenerate ``capability/required_bindings.json`` and ``resource_types.json`` from the official R4 definitions.

fhir.resources checks structure and types but not code values, so the server
checks every *required* binding itself (hl7.org/fhir/R4/terminologies.html#required).
This script reduces the base StructureDefinitions and the value sets of their
required bindings to the small table the validator needs at run time:

* ``types``: for every type (resource, complex datatype, or backbone element
  named by its path), the JSON keys that lead to a required binding, each with
  the child type to descend into and/or the value set whose codes it must use.
  Keys that can never reach a binding are pruned, so the run-time walk only
  visits what it must check.
* ``valuesets``: value set URL -> list of ``[system, code]`` pairs.

Value sets drawing on code systems the spec does not ship (BCP-13 mime types,
BCP-47 languages, ISO 4217 currencies, UCUM) cannot be expanded and are left
unchecked; the JSON lists them under ``unchecked``.

Usage: ``python capability/build_bindings.py ../shared/fhir-r4/definitions``
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

OUTPUT = Path(__file__).with_name("required_bindings.json")
RESOURCE_TYPES_OUTPUT = Path(__file__).with_name("resource_types.json")
CODED_TYPES = {"code", "CodeableConcept"}


def _strip_version(url: str) -> str:
    return url.split("|", 1)[0]


def _flatten_concepts(concepts: list[dict[str, Any]]) -> list[str]:
    codes: list[str] = []
    for concept in concepts:
        codes.append(concept["code"])
        codes.extend(_flatten_concepts(concept.get("concept", [])))
    return codes


def expand_value_sets(bundle: dict[str, Any]) -> tuple[dict[str, list[list[str]]], list[str]]:
    """Expand every ValueSet of the bundle into (system, code) pairs."""
    code_systems: dict[str, list[str]] = {}
    value_sets: dict[str, dict[str, Any]] = {}
    for entry in bundle["entry"]:
        res = entry["resource"]
        if res["resourceType"] == "CodeSystem":
            code_systems[res["url"]] = _flatten_concepts(res.get("concept", []))
        else:
            value_sets[res["url"]] = res

    expanded: dict[str, list[list[str]] | None] = {}

    def expand(url: str, seen: frozenset[str]) -> list[list[str]] | None:
        if url in expanded:
            return expanded[url]
        vs = value_sets.get(url)
        if vs is None or url in seen:
            return None
        pairs: list[list[str]] = []
        for include in vs.get("compose", {}).get("include", []):
            system = include.get("system")
            if system is not None:
                if "concept" in include:
                    pairs.extend([system, c["code"]] for c in include["concept"])
                elif system in code_systems:
                    pairs.extend([system, code] for code in code_systems[system])
                else:
                    return None
            for nested in include.get("valueSet", []):
                sub = expand(_strip_version(nested), seen | {url})
                if sub is None:
                    return None
                pairs.extend(sub)
        expanded[url] = pairs
        return pairs

    result: dict[str, list[list[str]]] = {}
    unchecked: list[str] = []
    for url in sorted(value_sets):
        pairs = expand(url, frozenset())
        if pairs:
            result[url] = pairs
        else:
            unchecked.append(url)
    return result, unchecked


def _json_keys(name: str, type_codes: list[str]) -> list[tuple[str, str]]:
    """JSON property names of an element; choice elements expand per type."""
    if name.endswith("[x]"):
        prefix = name[:-3]
        return [(prefix + code[0].upper() + code[1:], code) for code in type_codes]
    return [(name, type_codes[0] if type_codes else "")]


def build_type_table(
    structure_bundle: dict[str, Any], value_sets: dict[str, list[list[str]]]
) -> dict[str, dict[str, dict[str, Any]]]:
    """Map type -> JSON key -> {"type": child type, "valueset": url}, unpruned."""
    table: dict[str, dict[str, dict[str, Any]]] = {}
    for entry in structure_bundle["entry"]:
        sd = entry["resource"]
        if sd["kind"] not in ("resource", "complex-type"):
            continue
        root = sd["type"]
        elements = sd["snapshot"]["element"]
        parents = {el["path"].rsplit(".", 1)[0] for el in elements if "." in el["path"]}
        table.setdefault(root, {})
        for el in elements:
            path = el["path"]
            if "." not in path:
                continue
            parent, name = path.rsplit(".", 1)
            owner = root if parent == root else parent
            type_codes = [t["code"] for t in el.get("type", [])]
            binding = el.get("binding", {})
            bound_url = None
            if binding.get("strength") == "required" and "valueSet" in binding:
                url = _strip_version(binding["valueSet"])
                if url in value_sets:
                    bound_url = url
            for key, type_code in _json_keys(name, type_codes):
                if "contentReference" in el:
                    child = el["contentReference"].lstrip("#")
                elif path in parents:
                    child = path
                else:
                    child = type_code
                spec: dict[str, Any] = {"type": child}
                if bound_url and type_code in CODED_TYPES:
                    spec["valueset"] = bound_url
                table.setdefault(owner, {})[key] = spec
    return table


def prune(table: dict[str, dict[str, dict[str, Any]]], resource_types: set[str]) -> dict[str, Any]:
    """Keep only keys that hold a binding or lead to a type that does."""
    relevant: set[str] = {t for t, keys in table.items() if any("valueset" in s for s in keys.values())}
    changed = True
    while changed:
        changed = False
        for type_name, keys in table.items():
            if type_name in relevant:
                continue
            for spec in keys.values():
                child = spec["type"]
                if child in relevant or (child == "Resource" and relevant & resource_types):
                    relevant.add(type_name)
                    changed = True
                    break
    pruned: dict[str, Any] = {}
    for type_name, keys in table.items():
        kept = {}
        for key, spec in keys.items():
            child = spec["type"]
            leads_on = child in relevant or child == "Resource"
            entry = {}
            if "valueset" in spec:
                entry["valueset"] = spec["valueset"]
            if leads_on:
                entry["type"] = child
            if entry:
                kept[key] = entry
        if kept:
            pruned[type_name] = kept
    return pruned


def main(definitions_dir: str) -> None:
    base = Path(definitions_dir)
    structures = json.loads((base / "structure-definitions.json").read_text())
    vs_bundle = json.loads((base / "required-valuesets.json").read_text())
    value_sets, unchecked = expand_value_sets(vs_bundle)
    resource_types = {e["resource"]["type"] for e in structures["entry"] if e["resource"]["kind"] == "resource"}
    table = prune(build_type_table(structures, value_sets), resource_types)
    used = {spec["valueset"] for keys in table.values() for spec in keys.values() if "valueset" in spec}
    out = {
        "source": "hl7.fhir.r4.examples 4.0.1 (StructureDefinitions, required ValueSets)",
        "types": dict(sorted(table.items())),
        "valuesets": {url: value_sets[url] for url in sorted(used)},
        "unchecked": unchecked,
    }
    OUTPUT.write_text(json.dumps(out, separators=(",", ":"), sort_keys=False) + "\n")
    concrete = sorted(
        e["resource"]["type"]
        for e in structures["entry"]
        if e["resource"]["kind"] == "resource" and not e["resource"].get("abstract")
    )
    RESOURCE_TYPES_OUTPUT.write_text(json.dumps(concrete, indent=0) + "\n")
    print(f"{OUTPUT}: {len(table)} types, {len(used)} value sets, {len(unchecked)} unchecked")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "../shared/fhir-r4/definitions")
