"""Patient-record transaction Bundles shaped like Synthea's output, for tests and benchmarks.

Synthea (github.com/synthetichealth/synthea) writes one transaction Bundle
per patient: every entry a ``POST`` with a ``urn:uuid:`` fullUrl, references
between entries by those urns, and references to hospitals and clinicians
as conditional references (``Organization?identifier=...``) to a separate
providers Bundle loaded first with ``ifNoneExist``. This module makes both,
deterministically from a seed: ``providers_bundle()`` and
``patient_bundle(seed, encounters)`` (about 10 entries per encounter:
Encounter, Observations, DiagnosticReport, Claim, and some Conditions,
Procedures, MedicationRequests, Immunizations, CarePlans, CareTeams, Goals).
"""

from __future__ import annotations

import math
import random
import uuid
from typing import Any

SYNTHEA = "https://github.com/synthetichealth/synthea"
NPI = "http://hl7.org/fhir/sid/us-npi"
LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
ORGANIZATIONS = 5
PRACTITIONERS = 10
VITALS = (
    ("8302-2", "Body Height", "cm", 150, 190),
    ("29463-7", "Body Weight", "kg", 50, 110),
    ("8867-4", "Heart rate", "/min", 55, 100),
    ("8480-6", "Systolic Blood Pressure", "mm[Hg]", 100, 160),
    ("8462-4", "Diastolic Blood Pressure", "mm[Hg]", 60, 100),
    ("2339-0", "Glucose", "mg/dL", 70, 180),
)
CONDITIONS = (
    ("84114007", "Heart failure"),
    ("44054006", "Diabetes mellitus type 2"),
    ("38341003", "Hypertension"),
    ("195662009", "Acute viral pharyngitis"),
)


def _urn(rng: random.Random) -> str:
    return f"urn:uuid:{uuid.UUID(int=rng.getrandbits(128), version=4)}"


def _post(resource: dict[str, Any], full_url: str, if_none_exist: str | None = None) -> dict[str, Any]:
    request: dict[str, Any] = {"method": "POST", "url": resource["resourceType"]}
    if if_none_exist:
        request["ifNoneExist"] = if_none_exist
    return {"fullUrl": full_url, "resource": resource, "request": request}


def organization_ref(index: int) -> dict[str, str]:
    return {"reference": f"Organization?identifier={SYNTHEA}|org-{index}"}


def practitioner_ref(index: int) -> dict[str, str]:
    return {"reference": f"Practitioner?identifier={NPI}|{9_990_000_000 + index}"}


def providers_bundle() -> dict[str, Any]:
    """Hospitals and clinicians, each a conditional create (loadable any number of times)."""
    rng = random.Random(1)
    entries = []
    for index in range(ORGANIZATIONS):
        organization = {
            "resourceType": "Organization",
            "identifier": [{"system": SYNTHEA, "value": f"org-{index}"}],
            "active": True,
            "name": f"General Hospital {index}",
            "type": [
                {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/organization-type", "code": "prov"}]}
            ],
        }
        entries.append(_post(organization, _urn(rng), f"identifier={SYNTHEA}|org-{index}"))
    for index in range(PRACTITIONERS):
        npi = 9_990_000_000 + index
        practitioner = {
            "resourceType": "Practitioner",
            "identifier": [{"system": NPI, "value": str(npi)}],
            "active": True,
            "name": [{"family": f"Clinician{index}", "given": ["Sam"], "prefix": ["Dr."]}],
            "gender": "female" if index % 2 else "male",
        }
        entries.append(_post(practitioner, _urn(rng), f"identifier={NPI}|{npi}"))
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def patient_bundle(seed: int, encounters: int) -> dict[str, Any]:
    """One patient's record; ``encounters`` sets the size (about 10 entries each)."""
    rng = random.Random(seed)
    patient_urn = _urn(rng)
    subject = {"reference": patient_urn}
    entries: list[dict[str, Any]] = []
    patient = {
        "resourceType": "Patient",
        "identifier": [{"system": SYNTHEA, "value": str(uuid.UUID(int=rng.getrandbits(128), version=4))}],
        "name": [
            {"use": "official", "family": rng.choice(["Okafor", "Lindqvist", "Moreau", "Tanaka"]), "given": ["Alex"]}
        ],
        "gender": rng.choice(["female", "male"]),
        "birthDate": f"{rng.randint(1940, 1990)}-0{rng.randint(1, 9)}-1{rng.randint(0, 9)}",
        "address": [{"line": ["1 Main St"], "city": "Springfield", "state": "MA", "country": "US"}],
        "extension": [
            {
                "url": "http://hl7.org/fhir/StructureDefinition/patient-birthPlace",
                "valueAddress": {"city": "Boston", "state": "MA", "country": "US"},
            }
        ],
    }
    entries.append(_post(patient, patient_urn))
    conditions: list[str] = []
    for number in range(encounters):
        year = 2010 + number * 14 // max(encounters, 1)
        day = f"{year}-{rng.randint(1, 12):02d}-{rng.randint(10, 28)}"
        start, end = f"{day}T09:00:00Z", f"{day}T09:45:00Z"
        organization, clinician = rng.randrange(ORGANIZATIONS), rng.randrange(PRACTITIONERS)
        encounter_urn = _urn(rng)
        entries.append(
            _post(
                {
                    "resourceType": "Encounter",
                    "status": "finished",
                    "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
                    "type": [
                        {"coding": [{"system": SNOMED, "code": "185349003", "display": "Encounter for check up"}]}
                    ],
                    "subject": subject,
                    "participant": [{"individual": practitioner_ref(clinician)}],
                    "period": {"start": start, "end": end},
                    "serviceProvider": organization_ref(organization),
                },
                encounter_urn,
            )
        )
        encounter = {"reference": encounter_urn}
        results = []
        for code, display, unit, low, high in rng.sample(VITALS, 5):
            observation_urn = _urn(rng)
            results.append({"reference": observation_urn})
            entries.append(
                _post(
                    {
                        "resourceType": "Observation",
                        "status": "final",
                        "category": [
                            {
                                "coding": [
                                    {
                                        "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                        "code": "vital-signs",
                                    }
                                ]
                            }
                        ],
                        "code": {"coding": [{"system": LOINC, "code": code, "display": display}], "text": display},
                        "subject": subject,
                        "encounter": encounter,
                        "effectiveDateTime": start,
                        "issued": f"{day}T09:30:00.000Z",
                        "valueQuantity": {
                            "value": round(rng.uniform(low, high), 1),
                            "unit": unit,
                            "system": "http://unitsofmeasure.org",
                            "code": unit,
                        },
                    },
                    observation_urn,
                )
            )
        entries.append(
            _post(
                {
                    "resourceType": "DiagnosticReport",
                    "status": "final",
                    "code": {"coding": [{"system": LOINC, "code": "85354-9", "display": "Vital signs panel"}]},
                    "subject": subject,
                    "encounter": encounter,
                    "effectiveDateTime": start,
                    "issued": f"{day}T09:40:00.000Z",
                    "result": results,
                },
                _urn(rng),
            )
        )
        if number % 4 == 0:
            condition_urn = _urn(rng)
            conditions.append(condition_urn)
            code, display = CONDITIONS[(number // 4) % len(CONDITIONS)]
            entries.append(
                _post(
                    {
                        "resourceType": "Condition",
                        "clinicalStatus": {
                            "coding": [
                                {"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}
                            ]
                        },
                        "verificationStatus": {
                            "coding": [
                                {
                                    "system": "http://terminology.hl7.org/CodeSystem/condition-ver-status",
                                    "code": "confirmed",
                                }
                            ]
                        },
                        "code": {"coding": [{"system": SNOMED, "code": code, "display": display}], "text": display},
                        "subject": subject,
                        "encounter": encounter,
                        "onsetDateTime": start,
                        "recordedDate": start,
                    },
                    condition_urn,
                )
            )
            team_urn, goal_urn = _urn(rng), _urn(rng)
            entries.append(
                _post(
                    {
                        "resourceType": "CareTeam",
                        "status": "active",
                        "subject": subject,
                        "encounter": encounter,
                        "period": {"start": start},
                        "participant": [
                            {
                                "role": [
                                    {
                                        "coding": [
                                            {
                                                "system": SNOMED,
                                                "code": "223366009",
                                                "display": "Healthcare professional",
                                            }
                                        ]
                                    }
                                ],
                                "member": practitioner_ref(clinician),
                            },
                            {"member": subject},
                        ],
                        "managingOrganization": [organization_ref(organization)],
                    },
                    team_urn,
                )
            )
            entries.append(
                _post(
                    {
                        "resourceType": "Goal",
                        "lifecycleStatus": "active",
                        "description": {"text": f"Manage {display.lower()}"},
                        "subject": subject,
                        "addresses": [{"reference": condition_urn}],
                    },
                    goal_urn,
                )
            )
            entries.append(
                _post(
                    {
                        "resourceType": "CarePlan",
                        "status": "active",
                        "intent": "order",
                        "category": [
                            {
                                "coding": [
                                    {
                                        "system": SNOMED,
                                        "code": "736285004",
                                        "display": "Hypertension clinical management plan",
                                    }
                                ]
                            }
                        ],
                        "subject": subject,
                        "encounter": encounter,
                        "period": {"start": start},
                        "careTeam": [{"reference": team_urn}],
                        "addresses": [{"reference": condition_urn}],
                        "goal": [{"reference": goal_urn}],
                        "activity": [
                            {
                                "detail": {
                                    "code": {
                                        "coding": [
                                            {"system": SNOMED, "code": "229065009", "display": "Exercise therapy"}
                                        ]
                                    },
                                    "status": "in-progress",
                                }
                            }
                        ],
                    },
                    _urn(rng),
                )
            )
        if number % 3 == 1:
            entries.append(
                _post(
                    {
                        "resourceType": "MedicationRequest",
                        "status": "active",
                        "intent": "order",
                        "medicationCodeableConcept": {
                            "coding": [
                                {
                                    "system": "http://www.nlm.nih.gov/research/umls/rxnorm",
                                    "code": "314076",
                                    "display": "lisinopril 10 MG Oral Tablet",
                                }
                            ]
                        },
                        "subject": subject,
                        "encounter": encounter,
                        "authoredOn": start,
                        "requester": practitioner_ref(clinician),
                        **({"reasonReference": [{"reference": conditions[-1]}]} if conditions else {}),
                    },
                    _urn(rng),
                )
            )
        if number % 5 == 2:
            entries.append(
                _post(
                    {
                        "resourceType": "Procedure",
                        "status": "completed",
                        "code": {
                            "coding": [{"system": SNOMED, "code": "430193006", "display": "Medication reconciliation"}]
                        },
                        "subject": subject,
                        "encounter": encounter,
                        "performedPeriod": {"start": start, "end": end},
                    },
                    _urn(rng),
                )
            )
            entries.append(
                _post(
                    {
                        "resourceType": "Immunization",
                        "status": "completed",
                        "vaccineCode": {
                            "coding": [{"system": "http://hl7.org/fhir/sid/cvx", "code": "140", "display": "Influenza"}]
                        },
                        "patient": subject,
                        "encounter": encounter,
                        "occurrenceDateTime": start,
                        "primarySource": True,
                    },
                    _urn(rng),
                )
            )
        entries.append(
            _post(
                {
                    "resourceType": "Claim",
                    "status": "active",
                    "type": {
                        "coding": [
                            {"system": "http://terminology.hl7.org/CodeSystem/claim-type", "code": "institutional"}
                        ]
                    },
                    "use": "claim",
                    "patient": subject,
                    "billablePeriod": {"start": start, "end": end},
                    "created": end,
                    "provider": organization_ref(organization),
                    "priority": {
                        "coding": [
                            {"system": "http://terminology.hl7.org/CodeSystem/processpriority", "code": "normal"}
                        ]
                    },
                    "insurance": [{"sequence": 1, "focal": True, "coverage": {"display": "Medicare"}}],
                    "item": [
                        {
                            "sequence": 1,
                            "productOrService": {"coding": [{"system": SNOMED, "code": "185349003"}]},
                            "encounter": [encounter],
                        }
                    ],
                    "total": {"value": round(rng.uniform(50, 500), 2), "currency": "USD"},
                },
                _urn(rng),
            )
        )
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def encounters_for(entries: int) -> int:
    """Encounters that make a patient bundle of about ``entries`` entries."""
    return max(1, math.ceil((entries - 1) / 9.85))
