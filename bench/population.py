"""A care-coordination population: patients with the plans, goals, team, tasks, messages and referrals around them.

Deterministic for a seed, so benchmark queries can name values that exist.
Per patient (20 resources): Patient, 2 CarePlans, 3 Goals, 1 CareTeam,
6 Tasks, 4 Communications, 3 ServiceRequests; shared across patients: a pool
of Practitioners and Organizations. Value distributions follow what a care
management programme holds: most plans active, about a quarter of tasks
still requested, family names from a skewed list of common surnames plus a
long tail of rare ones, task owners skewed towards a few busy care managers.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

RESOURCES_PER_PATIENT = 20
SNOMED = "http://snomed.info/sct"
LOINC = "http://loinc.org"
COMMON_FAMILIES = [
    "Smith",
    "Johnson",
    "Williams",
    "Brown",
    "Jones",
    "Garcia",
    "Miller",
    "Davis",
    "Rodriguez",
    "Martinez",
    "Hernandez",
    "Lopez",
    "Gonzalez",
    "Wilson",
    "Anderson",
    "Thomas",
    "Taylor",
    "Moore",
    "Jackson",
    "Martin",
    "Lee",
    "Perez",
    "Thompson",
    "White",
    "Harris",
    "Sanchez",
    "Clark",
    "Ramirez",
    "Lewis",
    "Robinson",
    "Walker",
    "Young",
    "Allen",
    "King",
    "Wright",
    "Scott",
    "Torres",
    "Nguyen",
    "Hill",
    "Flores",
    "Green",
    "Adams",
    "Nelson",
    "Baker",
    "Hall",
    "Rivera",
    "Campbell",
    "Mitchell",
    "Carter",
    "Roberts",
    "Smithers",
    "Smit",
    "Okafor",
    "Schmidt",
    "Müller",
    "Kowalski",
    "Novak",
    "Jansen",
    "Dubois",
    "Rossi",
]
SYLLABLES = [
    "ka",
    "lo",
    "ren",
    "mi",
    "sa",
    "tor",
    "vel",
    "bra",
    "quin",
    "dax",
    "fen",
    "gor",
    "hal",
    "iv",
    "jun",
    "mar",
    "nel",
    "osk",
    "pry",
    "rud",
    "sel",
    "tam",
    "ulv",
    "wex",
    "yor",
    "zan",
]
GIVEN = [
    "Anna",
    "John",
    "Maria",
    "James",
    "Fatima",
    "Wei",
    "Olga",
    "Ahmed",
    "Lucia",
    "Peter",
    "Grace",
    "Samuel",
    "Aisha",
    "Tomas",
    "Mei",
    "Ivan",
    "Rosa",
    "Liam",
    "Noor",
]
CITIES = ("Springfield", "Riverton", "Lakeside", "Fairview", "Greenville", "Franklin", "Bristol", "Clinton")
CONDITIONS = (("84114007", "Heart failure"), ("44054006", "Diabetes mellitus type 2"), ("38341003", "Hypertension"))
TASK_CODES = ("fulfill", "approve", "abort", "replace", "change", "suspend", "resume")
REFERRALS = (
    ("306206005", "Referral to cardiology service"),
    ("183524004", "Referral to dietitian"),
    ("306362008", "Referral to community nursing service"),
    ("308447003", "Referral to pharmacist"),
)


def _weighted(rng: random.Random, choices: tuple[tuple[str, float], ...]) -> str:
    point = rng.random()
    for value, weight in choices:
        point -= weight
        if point < 0:
            return value
    return choices[-1][0]


@dataclass(frozen=True)
class Population:
    """``patients`` patients (ids ``pat-0``..) around ``practitioners`` practitioners, reproducible from ``seed``."""

    patients: int
    practitioners: int = 2_000
    organizations: int = 50
    seed: int = 7

    @property
    def total(self) -> int:
        return self.patients * RESOURCES_PER_PATIENT + self.practitioners + self.organizations

    def family_of(self, index: int) -> str:
        rng = random.Random(self.seed * 1_000_003 + index)
        if rng.random() < 0.5:  # common surnames, skewed: Smith about 2% of all patients
            return COMMON_FAMILIES[int(len(COMMON_FAMILIES) * rng.random() ** 1.3)]
        return "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 4))).capitalize()

    def owner_of(self, rng: random.Random) -> int:
        """Task owners: a few busy care managers, a long tail of occasional ones."""
        return int(self.practitioners * rng.random() ** 1.5)

    def shared(self) -> Iterator[dict[str, Any]]:
        for index in range(self.organizations):
            yield {
                "resourceType": "Organization",
                "id": f"org-{index}",
                "active": True,
                "name": f"{CITIES[index % len(CITIES)]} Health Partner {index}",
                "type": [
                    {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/organization-type", "code": "prov"}]}
                ],
            }
        rng = random.Random(self.seed)
        for index in range(self.practitioners):
            yield {
                "resourceType": "Practitioner",
                "id": f"prac-{index}",
                "active": True,
                "identifier": [{"system": "http://hl7.org/fhir/sid/us-npi", "value": f"{1_000_000_000 + index}"}],
                "name": [
                    {"family": self.family_of(10_000_000 + index), "given": [rng.choice(GIVEN)], "prefix": ["Dr"]}
                ],
                "telecom": [{"system": "email", "value": f"prac{index}@example.org"}],
            }

    def patient_record(self, index: int) -> list[dict[str, Any]]:
        """The 20 resources of patient ``index``; references only to resources that exist."""
        rng = random.Random(self.seed * 7_919 + index)
        pid = f"pat-{index}"
        patient_ref = {"reference": f"Patient/{pid}"}
        team = [f"prac-{rng.randrange(self.practitioners)}" for _ in range(4)]
        condition_code, condition_text = rng.choice(CONDITIONS)
        year = rng.randint(2024, 2026)
        records: list[dict[str, Any]] = [
            {
                "resourceType": "Patient",
                "id": pid,
                "active": rng.random() < 0.95,
                "identifier": [{"system": "urn:oid:2.16.840.1.113883.19.5", "value": f"MRN{index:08d}"}],
                "name": [{"use": "official", "family": self.family_of(index), "given": [rng.choice(GIVEN)]}],
                "gender": rng.choice(("female", "male", "female", "male", "other", "unknown")),
                "birthDate": f"{rng.randint(1930, 2005)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
                "address": [
                    {"city": rng.choice(CITIES), "postalCode": f"{rng.randint(10000, 99999)}", "country": "US"}
                ],
                "managingOrganization": {"reference": f"Organization/org-{index % self.organizations}"},
            },
            {
                "resourceType": "CareTeam",
                "id": f"{pid}-team",
                "status": "active",
                "name": f"{condition_text} care team",
                "subject": patient_ref,
                "participant": [
                    {
                        "role": [{"coding": [{"system": SNOMED, "code": role}]}],
                        "member": {"reference": f"Practitioner/{member}"},
                    }
                    for role, member in zip(("17561000", "62247001", "159033005", "224535009"), team, strict=True)
                ],
                "managingOrganization": [{"reference": f"Organization/org-{index % self.organizations}"}],
            },
        ]
        goals = [f"{pid}-goal-{n}" for n in range(3)]
        for n, goal_id in enumerate(goals):
            records.append(
                {
                    "resourceType": "Goal",
                    "id": goal_id,
                    "lifecycleStatus": _weighted(
                        rng, (("active", 0.6), ("completed", 0.2), ("proposed", 0.1), ("cancelled", 0.1))
                    ),
                    "description": {
                        "text": ("Daily weight within 2 kg", "HbA1c below 7%", "Blood pressure below 130/80")[n]
                    },
                    "subject": patient_ref,
                    "startDate": f"{year}-0{rng.randint(1, 9)}-1{rng.randint(0, 9)}",
                    "target": [
                        {
                            "measure": {"coding": [{"system": LOINC, "code": ("29463-7", "4548-4", "8480-6")[n]}]},
                            "dueDate": f"{year + 1}-06-30",
                        }
                    ],
                }
            )
        referrals = [f"{pid}-sr-{n}" for n in range(3)]
        for n, referral_id in enumerate(referrals):
            code, text = REFERRALS[(index + n) % len(REFERRALS)]
            records.append(
                {
                    "resourceType": "ServiceRequest",
                    "id": referral_id,
                    "status": _weighted(rng, (("active", 0.5), ("completed", 0.35), ("revoked", 0.1), ("draft", 0.05))),
                    "intent": "order",
                    "category": [{"coding": [{"system": SNOMED, "code": "3457005", "display": "Patient referral"}]}],
                    "code": {"coding": [{"system": SNOMED, "code": code, "display": text}]},
                    "subject": patient_ref,
                    "requester": {"reference": f"Practitioner/{team[1]}"},
                    "performer": [{"reference": f"Practitioner/{rng.choice(team)}"}],
                    "authoredOn": f"{year}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
                    "reasonCode": [{"coding": [{"system": SNOMED, "code": condition_code, "display": condition_text}]}],
                }
            )
        for n in range(2):
            records.append(
                {
                    "resourceType": "CarePlan",
                    "id": f"{pid}-plan-{n}",
                    "status": _weighted(
                        rng,
                        (("active", 0.6), ("completed", 0.25), ("draft", 0.05), ("on-hold", 0.05), ("revoked", 0.05)),
                    ),
                    "intent": "plan",
                    "category": [
                        {
                            "coding": [
                                {
                                    "system": "http://hl7.org/fhir/us/core/CodeSystem/careplan-category",
                                    "code": "assess-plan",
                                }
                            ]
                        }
                    ],
                    "title": f"{condition_text} plan {n + 1}",
                    "subject": patient_ref,
                    "period": {"start": f"{year}-{rng.randint(1, 12):02d}-01"},
                    "author": {"reference": f"Practitioner/{team[0]}"},
                    "careTeam": [{"reference": f"CareTeam/{pid}-team"}],
                    "goal": [{"reference": f"Goal/{g}"} for g in goals],
                    "activity": [
                        {"reference": {"reference": f"ServiceRequest/{referral_id}"}} for referral_id in referrals
                    ],
                }
            )
        for n in range(6):
            owner = self.owner_of(rng)
            records.append(
                {
                    "resourceType": "Task",
                    "id": f"{pid}-task-{n}",
                    "status": _weighted(
                        rng,
                        (
                            ("requested", 0.25),
                            ("accepted", 0.1),
                            ("in-progress", 0.2),
                            ("completed", 0.4),
                            ("cancelled", 0.05),
                        ),
                    ),
                    "intent": "order",
                    "priority": _weighted(rng, (("routine", 0.8), ("urgent", 0.15), ("asap", 0.05))),
                    "code": {
                        "coding": [
                            {"system": "http://hl7.org/fhir/CodeSystem/task-code", "code": rng.choice(TASK_CODES)}
                        ]
                    },
                    "basedOn": [{"reference": f"ServiceRequest/{referrals[n % 3]}"}],
                    "focus": {"reference": f"ServiceRequest/{referrals[n % 3]}"},
                    "for": patient_ref,
                    "authoredOn": f"{year}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T09:00:00Z",
                    "requester": {"reference": f"Practitioner/{team[1]}"},
                    "owner": {"reference": f"Practitioner/prac-{owner}"},
                    "description": "Follow up on referral and confirm appointment",
                }
            )
        for n in range(4):
            sender, recipient = rng.sample(team, 2)
            records.append(
                {
                    "resourceType": "Communication",
                    "id": f"{pid}-msg-{n}",
                    "status": "completed",
                    "category": [
                        {
                            "coding": [
                                {
                                    "system": "http://terminology.hl7.org/CodeSystem/communication-category",
                                    "code": "notification",
                                }
                            ]
                        }
                    ],
                    "subject": patient_ref,
                    "about": [{"reference": f"ServiceRequest/{referrals[n % 3]}"}],
                    "sent": f"{year}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T1{rng.randint(0, 9)}:30:00Z",
                    "sender": {"reference": f"Practitioner/{sender}"},
                    "recipient": [{"reference": f"Practitioner/{recipient}"}],
                    "payload": [{"contentString": "Weight up 1.8 kg since Monday; diuretic dose reviewed."}],
                }
            )
        assert len(records) == RESOURCES_PER_PATIENT
        return records
