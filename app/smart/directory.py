"""What the authorization pages need to know of the FHIR data: patients to pick, and whether a
launch's patient or encounter exists. Plain reads of the current resources, outside any caller's
gate: the signed-in user is choosing what the token will reach, and the token's scopes confine it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from app.smart.clients import FHIR_ID
from app.storage.index_tables import INDEX_TABLES
from app.storage.tables import resources


@dataclass(frozen=True, slots=True)
class PatientChoice:
    id: str
    label: str


def patient_label(body: dict[str, Any]) -> str:
    """``GIVEN FAMILY`` from the first name (given names joined by spaces), then the birth date."""
    names = body.get("name") or []
    name = names[0] if names and isinstance(names[0], dict) else {}
    given = " ".join(part for part in name.get("given", []) if isinstance(part, str))
    family = name.get("family") if isinstance(name.get("family"), str) else ""
    label = " ".join(part for part in (given, family) if part) or name.get("text") or f"Patient/{body.get('id')}"
    if isinstance(body.get("birthDate"), str):
        label += f" (born {body['birthDate']})"
    return str(label)


async def patient_choices(conn: AsyncConnection, limit: int) -> list[PatientChoice]:
    """The ``limit`` most recently created or updated live Patients."""
    rows = await conn.execute(
        select(resources.c.id, resources.c.body)
        .where(resources.c.resource_type == "Patient", resources.c.deleted.is_(False))
        .order_by(resources.c.last_updated.desc(), resources.c.id)
        .limit(limit)
    )
    return [PatientChoice(row.id, patient_label(orjson.loads(row.body))) for row in rows]


@dataclass(frozen=True, slots=True)
class EncounterChoice:
    id: str
    label: str


def encounter_label(body: dict[str, Any]) -> str:
    """What identifies an encounter to a user: its type or class, when it started, its status."""
    kind: Any = ""
    types = body.get("type") or []
    if types and isinstance(types[0], dict):
        kind = types[0].get("text") or next(
            (c.get("display") or c.get("code") for c in types[0].get("coding", []) if isinstance(c, dict)), ""
        )
    if not kind and isinstance(body.get("class"), dict):
        kind = body["class"].get("display") or body["class"].get("code") or ""
    start = body.get("period", {}).get("start", "") if isinstance(body.get("period"), dict) else ""
    parts = [str(part) for part in (kind or "Encounter", start) if part]
    return f"{' '.join(parts)} ({body.get('status', 'unknown')})"


async def encounter_choices(
    conn: AsyncConnection, patient_id: str, subject_hash: int, limit: int
) -> list[EncounterChoice]:
    """The ``limit`` most recently updated live Encounters of a patient (``Encounter.subject``, found
    through the reference index with the ``subject`` parameter's hash)."""
    ref = INDEX_TABLES["reference"]
    linked = select(ref.c.resource_id).where(
        ref.c.param_hash == subject_hash,
        ref.c.resource_type == "Encounter",
        ref.c.target_type == "Patient",
        ref.c.target_id == patient_id,
    )
    rows = await conn.execute(
        select(resources.c.id, resources.c.body)
        .where(resources.c.resource_type == "Encounter", resources.c.deleted.is_(False), resources.c.id.in_(linked))
        .order_by(resources.c.last_updated.desc(), resources.c.id)
        .limit(limit)
    )
    return [EncounterChoice(row.id, encounter_label(orjson.loads(row.body))) for row in rows]


async def resource_exists(conn: AsyncConnection, resource_type: str, resource_id: str) -> bool:
    """Whether a live resource has this id; an id no resource can have (not a FHIR id) is not looked up."""
    if not FHIR_ID.fullmatch(resource_id):
        return False
    row = await conn.execute(
        select(resources.c.id).where(
            resources.c.resource_type == resource_type,
            resources.c.id == resource_id,
            resources.c.deleted.is_(False),
        )
    )
    return row.first() is not None


async def related_patient(conn: AsyncConnection, related_person_id: str) -> str | None:
    """The id of the Patient a RelatedPerson is related to (``RelatedPerson.patient``), if live."""
    row = (
        await conn.execute(
            select(resources.c.body).where(
                resources.c.resource_type == "RelatedPerson",
                resources.c.id == related_person_id,
                resources.c.deleted.is_(False),
            )
        )
    ).first()
    if row is None:
        return None
    reference = orjson.loads(row.body).get("patient", {}).get("reference", "")
    if isinstance(reference, str) and reference.startswith("Patient/"):
        return reference.split("/", 1)[1]
    return None
