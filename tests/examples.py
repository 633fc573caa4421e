"""Access to the official R4 examples copied into tests/fixtures/examples."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

EXAMPLES = Path(__file__).parent / "fixtures" / "examples"
CARE_COORDINATION_TYPES = ("CarePlan", "CareTeam", "Goal", "Task", "Communication", "ServiceRequest")


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((EXAMPLES / name).read_text())
    return data


def examples_of(resource_type: str) -> list[tuple[str, dict[str, Any]]]:
    found = []
    for path in sorted(EXAMPLES.glob("*.json")):
        data = json.loads(path.read_text())
        if data.get("resourceType") == resource_type:
            found.append((path.name, data))
    return found


def all_care_coordination_examples() -> list[tuple[str, dict[str, Any]]]:
    return [item for t in CARE_COORDINATION_TYPES for item in examples_of(t)]


def first_example(resource_type: str) -> dict[str, Any]:
    return examples_of(resource_type)[0][1]
