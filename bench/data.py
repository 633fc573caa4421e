"""Realistic care-coordination bodies for the benchmarks."""

from __future__ import annotations

import random
from typing import Any


def care_plan(index: int, rng: random.Random) -> dict[str, Any]:
    """A CarePlan of ~2 KB with goals, activities and references, like a discharge plan."""
    patient = f"Patient/p{index % 50_000}"
    return {
        "resourceType": "CarePlan",
        "identifier": [{"system": "urn:bench:careplan", "value": f"cp-{index}"}],
        "status": rng.choice(["draft", "active", "on-hold", "completed"]),
        "intent": "plan",
        "category": [{"coding": [{"system": "http://snomed.info/sct", "code": "734163000", "display": "Care plan"}]}],
        "title": f"Heart failure follow-up plan {index}",
        "description": "Post-discharge plan: fluid restriction, daily weights, titration of diuretics.",
        "subject": {"reference": patient, "display": f"Patient {index}"},
        "period": {"start": "2026-11-01", "end": "2027-02-01"},
        "created": "2026-11-01T10:00:00Z",
        "author": {"reference": "Practitioner/cardio-1"},
        "careTeam": [{"reference": f"CareTeam/ct{index % 50_000}"}],
        "addresses": [{"reference": f"Condition/hf{index % 50_000}", "display": "Heart failure"}],
        "goal": [{"reference": f"Goal/g{index}-1"}, {"reference": f"Goal/g{index}-2"}],
        "activity": [
            {
                "detail": {
                    "kind": "ServiceRequest",
                    "code": {
                        "coding": [{"system": "http://snomed.info/sct", "code": "27113001", "display": "Body weight"}]
                    },
                    "status": rng.choice(["scheduled", "in-progress", "not-started"]),
                    "doNotPerform": False,
                    "scheduledTiming": {"repeat": {"frequency": 1, "period": 1, "periodUnit": "d"}},
                    "performer": [{"reference": f"Patient/p{index % 50_000}"}],
                    "description": "Weigh every morning; call if gain > 2 kg in 3 days",
                }
            },
            {
                "detail": {
                    "kind": "MedicationRequest",
                    "status": "in-progress",
                    "productCodeableConcept": {"text": "furosemide 40 mg"},
                    "dailyAmount": {"value": 40, "unit": "mg", "system": "http://unitsofmeasure.org", "code": "mg"},
                }
            },
        ],
        "note": [{"text": "Patient understands fluid restriction of 1.5 L/day."}],
    }
