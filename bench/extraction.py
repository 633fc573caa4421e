"""Index-extraction cost per resource: the plain-path fast path against fhirpathpy alone.

    python -m bench.extraction

Uses the official examples of the care-coordination types in tests/fixtures and
the bench CarePlan; prints microseconds per resource for each extractor and
their ratio (fhirpathpy-only is the baseline measured in the same run).
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Any

from app.main import served_resource_types
from app.search.extraction import Extractor
from app.search.registry import load_registry
from bench.data import care_plan

EXAMPLES = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "examples"
TYPES = ("CarePlan", "CareTeam", "Goal", "Task", "Communication", "ServiceRequest", "Patient")


def per_resource_us(extractor: Extractor, resources: list[dict[str, Any]], rounds: int) -> float:
    for resource in resources:
        extractor.extract(resource["resourceType"], resource)  # compile outside the timing
    started = time.perf_counter()
    for _ in range(rounds):
        for resource in resources:
            extractor.extract(resource["resourceType"], resource)
    return (time.perf_counter() - started) / (rounds * len(resources)) * 1e6


def main() -> None:
    registry = load_registry(served_resource_types())
    fast, slow = Extractor(registry), Extractor(registry, use_fast_path=False)
    examples = [json.loads(p.read_text()) for p in sorted(EXAMPLES.glob("*.json"))]
    print("| resources | fast path us | fhirpathpy only us | speed-up |")
    print("|---|---|---|---|")
    for resource_type in TYPES:
        group = [e for e in examples if e["resourceType"] == resource_type]
        f, s = per_resource_us(fast, group, 50), per_resource_us(slow, group, 50)
        print(f"| {len(group)} official {resource_type} examples | {f:.0f} | {s:.0f} | {s / f:.1f}x |")
    rng = random.Random(5)
    plans = [care_plan(i, rng) for i in range(200)]
    f, s = per_resource_us(fast, plans, 5), per_resource_us(slow, plans, 5)
    print(f"| 200 bench CarePlans (~1.4 KB) | {f:.0f} | {s:.0f} | {s / f:.1f}x |")


if __name__ == "__main__":
    main()
