"""A hospital discharge as one transaction Bundle: the shared care plan an EHR pushes at discharge.

``discharge_bundle(seed, entries=500)``: Patient, Encounter, Conditions, one
CarePlan whose activities point at the ServiceRequests, Goals, a CareTeam,
Tasks (based on the referrals) and Communications (about them), every
reference between entries a ``urn:uuid:`` fullUrl. ``one_by_one(bundle)``
yields the same resources in dependency order for posting singly, with a
function to rewrite references once the ids are known, as a client without
transactions must do.
"""

from __future__ import annotations

import random
import uuid
from typing import Any

from app.interactions.transaction import rewrite_references

SNOMED = "http://snomed.info/sct"


def _urn(rng: random.Random) -> str:
    return f"urn:uuid:{uuid.UUID(int=rng.getrandbits(128), version=4)}"


def discharge_bundle(seed: int, entries: int = 500) -> dict[str, Any]:
    rng = random.Random(seed)
    patient, encounter, team = _urn(rng), _urn(rng), _urn(rng)
    subject = {"reference": patient}
    rest = entries - 4  # patient, encounter, care team, care plan
    conditions = [_urn(rng) for _ in range(max(1, rest // 50))]
    goals = [_urn(rng) for _ in range(max(1, rest // 25))]
    referrals = [_urn(rng) for _ in range(max(1, rest // 5))]
    remaining = rest - len(conditions) - len(goals) - len(referrals)
    tasks = [_urn(rng) for _ in range(remaining * 3 // 5)]
    messages = [_urn(rng) for _ in range(remaining - len(tasks))]
    out: list[tuple[str, dict[str, Any]]] = [
        (
            patient,
            {
                "resourceType": "Patient",
                "identifier": [{"system": "urn:oid:2.16.840.1.113883.19.5", "value": f"D{seed:08d}"}],
                "name": [{"family": "Okafor", "given": ["Ngozi"]}],
                "gender": "female",
                "birthDate": "1951-04-02",
            },
        ),
        (
            encounter,
            {
                "resourceType": "Encounter",
                "status": "finished",
                "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP"},
                "subject": subject,
                "period": {"start": "2026-11-18T08:00:00Z", "end": "2026-11-24T15:00:00Z"},
                "hospitalization": {"dischargeDisposition": {"coding": [{"code": "home"}]}},
            },
        ),
    ]
    for n, urn in enumerate(conditions):
        out.append(
            (
                urn,
                {
                    "resourceType": "Condition",
                    "clinicalStatus": {
                        "coding": [
                            {"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}
                        ]
                    },
                    "code": {
                        "coding": [{"system": SNOMED, "code": "84114007", "display": "Heart failure"}],
                        "text": f"Dx {n}",
                    },
                    "subject": subject,
                    "encounter": {"reference": encounter},
                },
            )
        )
    for n, urn in enumerate(goals):
        out.append(
            (
                urn,
                {
                    "resourceType": "Goal",
                    "lifecycleStatus": "active",
                    "description": {"text": f"Goal {n}: daily weight within 2 kg of 72 kg"},
                    "subject": subject,
                    "addresses": [{"reference": conditions[n % len(conditions)]}],
                    "target": [{"dueDate": "2027-02-01"}],
                },
            )
        )
    out.append(
        (
            team,
            {
                "resourceType": "CareTeam",
                "status": "active",
                "name": "Heart failure transition team",
                "subject": subject,
                "encounter": {"reference": encounter},
                "participant": [{"member": {"reference": f"Practitioner/prac-{n}"}} for n in range(4)],
            },
        )
    )
    for n, urn in enumerate(referrals):
        out.append(
            (
                urn,
                {
                    "resourceType": "ServiceRequest",
                    "status": "active",
                    "intent": "order",
                    "code": {"coding": [{"system": SNOMED, "code": "306206005", "display": "Referral to cardiology"}]},
                    "subject": subject,
                    "encounter": {"reference": encounter},
                    "reasonReference": [{"reference": conditions[n % len(conditions)]}],
                    "authoredOn": "2026-11-24",
                    "requester": {"reference": "Practitioner/prac-1"},
                },
            )
        )
    out.append(
        (
            _urn(rng),
            {
                "resourceType": "CarePlan",
                "status": "active",
                "intent": "plan",
                "title": "Post-discharge heart failure plan",
                "subject": subject,
                "encounter": {"reference": encounter},
                "careTeam": [{"reference": team}],
                "addresses": [{"reference": c} for c in conditions],
                "goal": [{"reference": g} for g in goals],
                "activity": [{"reference": {"reference": r}} for r in referrals],
            },
        )
    )
    for n, urn in enumerate(tasks):
        out.append(
            (
                urn,
                {
                    "resourceType": "Task",
                    "status": "requested",
                    "intent": "order",
                    "basedOn": [{"reference": referrals[n % len(referrals)]}],
                    "for": subject,
                    "encounter": {"reference": encounter},
                    "owner": {"reference": f"Practitioner/prac-{n % 4}"},
                    "description": f"Follow-up {n}: book appointment and confirm with patient",
                },
            )
        )
    for n, urn in enumerate(messages):
        out.append(
            (
                urn,
                {
                    "resourceType": "Communication",
                    "status": "completed",
                    "subject": subject,
                    "about": [{"reference": referrals[n % len(referrals)]}],
                    "sent": "2026-11-24T16:00:00Z",
                    "payload": [{"contentString": f"Discharge note {n}: diuretic dose changed, weigh daily."}],
                },
            )
        )
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"fullUrl": urn, "resource": resource, "request": {"method": "POST", "url": resource["resourceType"]}}
            for urn, resource in out
        ],
    }


def rewrite(resource: Any, ids: dict[str, str]) -> Any:
    """References to fullUrls replaced by the ``Type/id`` they were created as (in place)."""
    return rewrite_references(resource, ids.get)


def one_by_one(bundle: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(fullUrl, resource) in an order where every reference points at an earlier resource."""
    return [(e["fullUrl"], e["resource"]) for e in bundle["entry"]]
