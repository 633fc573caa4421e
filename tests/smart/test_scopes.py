"""SMART clinical scopes: what each scope string parses to, and the access it grants.

hl7.org/fhir/smart-app-launch/scopes-and-launch-context.html defines the
grammar (``<level>/<type>.<permissions>``, v2 ``cruds`` letters in order,
optionally narrowed by a ``?query``; v1 ``read``/``write``/``*``) and what
each letter permits. Every interaction's 403 and every read gate is built
from ``Permissions.type_access()``, and every token grant from
``covered_by``, so a scope parsed too generously widens access for every
request of that token: these tests pin each case, including the refusals
and the granular scopes that must grant nothing until the server can narrow
by their query.
"""

from __future__ import annotations

from typing import cast

import pytest

from app.smart.scopes import (
    LETTERS,
    ClinicalScope,
    Letter,
    Level,
    Permissions,
    ScopeError,
    covered_by,
    parse_permissions,
    parse_scope,
)
from app.storage.gate import TypeAccess


def letters(text: str) -> frozenset[Letter]:
    return frozenset(cast(Letter, letter) for letter in text)


@pytest.mark.parametrize(
    ("text", "level", "resource_type", "granted"),
    [
        ("patient/CarePlan.rs", "patient", "CarePlan", "rs"),
        ("user/*.cruds", "user", "*", "cruds"),
        ("system/Task.cud", "system", "Task", "cud"),
        ("patient/Observation.c", "patient", "Observation", "c"),
        ("user/Patient.s", "user", "Patient", "s"),
        ("system/*.rs", "system", "*", "rs"),
    ],
)
def test_v2_scopes_parse_to_level_type_and_letters(text: str, level: str, resource_type: str, granted: str) -> None:
    assert parse_scope(text) == ClinicalScope(cast(Level, level), resource_type, letters(granted), None, text)


@pytest.mark.parametrize(
    ("text", "granted"),
    [
        ("patient/CarePlan.read", "rs"),
        ("user/Task.write", "cud"),
        ("system/Task.write", "cud"),
        ("user/*.*", "cruds"),
        ("patient/Observation.*", "cruds"),
    ],
)
def test_v1_scopes_map_to_the_v2_letters_the_ig_gives(text: str, granted: str) -> None:
    scope = parse_scope(text)
    assert scope is not None
    assert scope.letters == letters(granted)
    assert scope.query is None


def test_a_granular_scope_keeps_its_query() -> None:
    text = "patient/Observation.rs?category=http://terminology.hl7.org/CodeSystem/observation-category|laboratory"
    scope = parse_scope(text)
    assert scope == ClinicalScope(
        "patient",
        "Observation",
        letters("rs"),
        "category=http://terminology.hl7.org/CodeSystem/observation-category|laboratory",
        text,
    )


@pytest.mark.parametrize(
    "text", ["openid", "fhirUser", "launch", "launch/patient", "launch/encounter", "offline_access", "online_access"]
)
def test_scopes_that_are_not_clinical_parse_to_none(text: str) -> None:
    assert parse_scope(text) is None


@pytest.mark.parametrize(
    "text",
    [
        "patient/CarePlan.xyz",  # not letters of cruds
        "patient/CarePlan.sr",  # cruds letters out of order
        "patient/CarePlan.rr",  # a letter twice
        "patient/carePlan.rs",  # a type starts with a capital
        "patient/CarePlan.",  # no permissions
        "patient/CarePlan",  # no permissions, no dot
        "patient/CarePlan.rs?",  # an empty query
        "patient/CarePlan.read?status=active",  # v1 takes no query
        "patient/CarePlan.READ",
        "practitioner/CarePlan.rs",  # not a level
        "patient/Care-Plan.rs",
        "patient/*.**",
    ],
)
def test_malformed_clinical_scopes_raise_scope_error(text: str) -> None:
    with pytest.raises(ScopeError) as raised:
        parse_scope(text)
    assert text[:20] in str(raised.value)


def test_parse_permissions_keeps_clinical_scopes_only_and_refuses_a_malformed_one() -> None:
    permissions = parse_permissions("openid fhirUser launch/patient patient/CarePlan.rs  user/Task.read offline_access")
    assert [scope.text for scope in permissions.scopes] == ["patient/CarePlan.rs", "user/Task.read"]
    assert parse_permissions("openid launch") == Permissions(())
    with pytest.raises(ScopeError):
        parse_permissions("openid patient/CarePlan.sr")


@pytest.mark.parametrize(
    ("scope", "resource_type", "granted"),
    [
        ("patient/CarePlan.rs", "CarePlan", "rs"),
        ("patient/CarePlan.rs", "Task", ""),
        ("user/*.cruds", "Task", "cruds"),
        ("user/*.cruds", "CarePlan", "cruds"),
        ("system/Task.write", "Task", "cud"),
        ("system/Task.write", "CarePlan", ""),
        ("patient/CarePlan.read user/Task.c", "CarePlan", "rs"),
        ("patient/CarePlan.read user/Task.c", "Task", "c"),
        ("openid fhirUser", "CarePlan", ""),
    ],
)
def test_allows_answers_per_letter(scope: str, resource_type: str, granted: str) -> None:
    permissions = parse_permissions(scope)
    assert {letter for letter in LETTERS if permissions.allows(resource_type, letter)} == set(granted)


def test_unconfined_is_only_user_and_system_scopes_without_a_query() -> None:
    permissions = parse_permissions("patient/CarePlan.cruds user/Task.r system/Goal.rs user/Observation.rs?code=x")
    assert not permissions.unconfined("CarePlan", "r")
    assert permissions.unconfined("Task", "r") and not permissions.unconfined("Task", "s")
    assert permissions.unconfined("Goal", "s")
    assert not permissions.unconfined("Observation", "r")


def test_types_for_names_the_types_per_level_and_none_for_a_wildcard() -> None:
    permissions = parse_permissions("patient/CarePlan.rs user/Task.cu system/Goal.d")
    assert permissions.types_for(letters("r")) == frozenset({"CarePlan"})
    assert permissions.types_for(letters("cd")) == frozenset({"Task", "Goal"})
    assert permissions.types_for(letters("u"), "patient") == frozenset()
    assert permissions.types_for(letters("u"), "user") == frozenset({"Task"})
    assert parse_permissions("patient/CarePlan.rs user/*.r").types_for(letters("r")) is None
    assert parse_permissions("patient/CarePlan.rs user/*.r").types_for(letters("r"), "patient") == frozenset(
        {"CarePlan"}
    )


def test_levels_are_reported() -> None:
    assert parse_permissions("patient/CarePlan.rs").has_patient_scopes
    assert not parse_permissions("patient/CarePlan.rs").has_system_scopes
    assert parse_permissions("system/*.rs").has_system_scopes
    user = parse_permissions("user/*.cruds openid")
    assert not user.has_patient_scopes and not user.has_system_scopes


def _reach(access: TypeAccess, resource_type: str) -> dict[str, str]:
    return {letter: access.reach(resource_type, letter) for letter in LETTERS}


def test_patient_scopes_reach_their_types_inside_the_compartment_only() -> None:
    access = parse_permissions("patient/CarePlan.rs patient/Task.cu launch/patient").type_access()
    assert access.everywhere == {letter: frozenset() for letter in "cruds"}
    assert access.in_compartment == {
        "c": frozenset({"Task"}),
        "r": frozenset({"CarePlan"}),
        "u": frozenset({"Task"}),
        "d": frozenset(),
        "s": frozenset({"CarePlan"}),
    }
    assert _reach(access, "CarePlan") == {"c": "none", "r": "compartment", "u": "none", "d": "none", "s": "compartment"}
    assert _reach(access, "Observation") == dict.fromkeys("cruds", "none")


def test_user_and_system_scopes_reach_their_types_everywhere() -> None:
    access = parse_permissions("user/CarePlan.rs system/Task.write").type_access()
    assert access.in_compartment == {letter: frozenset() for letter in "cruds"}
    assert _reach(access, "CarePlan") == {"c": "none", "r": "all", "u": "none", "d": "none", "s": "all"}
    assert _reach(access, "Task") == {"c": "all", "r": "none", "u": "all", "d": "all", "s": "none"}


def test_wildcards_reach_every_type() -> None:
    everywhere = parse_permissions("user/*.cruds").type_access()
    assert everywhere.everywhere == dict.fromkeys("cruds", None)
    assert _reach(everywhere, "Anything") == dict.fromkeys("cruds", "all")
    inside = parse_permissions("patient/*.read").type_access()
    assert inside.in_compartment == {"c": frozenset(), "r": None, "u": frozenset(), "d": frozenset(), "s": None}
    assert _reach(inside, "Condition") == {
        "c": "none",
        "r": "compartment",
        "u": "none",
        "d": "none",
        "s": "compartment",
    }


def test_a_user_scope_wins_over_a_patient_scope_on_the_same_type() -> None:
    access = parse_permissions("patient/CarePlan.cruds user/CarePlan.r").type_access()
    assert _reach(access, "CarePlan") == {
        "c": "compartment",
        "r": "all",
        "u": "compartment",
        "d": "compartment",
        "s": "compartment",
    }


def test_granular_scopes_grant_nothing_through_type_access() -> None:
    permissions = parse_permissions(
        "patient/Observation.rs?category=laboratory user/Condition.rs?clinical-status=active"
    )
    access = permissions.type_access()
    assert _reach(access, "Observation") == dict.fromkeys("cruds", "none")
    assert _reach(access, "Condition") == dict.fromkeys("cruds", "none")
    assert access.read_types() == (frozenset(), frozenset())
    # a wildcard granular scope grants nothing either, not every type
    assert _reach(parse_permissions("user/*.rs?_security=N").type_access(), "Task") == dict.fromkeys("cruds", "none")


@pytest.mark.parametrize(
    ("requested", "registered", "covered"),
    [
        ("patient/CarePlan.rs", ["patient/CarePlan.rs"], True),  # exact
        ("openid", ["openid", "fhirUser"], True),  # a non-clinical scope, registered
        ("offline_access", ["openid"], False),  # a non-clinical scope, not registered
        ("patient/CarePlan.r", ["patient/CarePlan.rs"], True),  # fewer letters
        ("patient/CarePlan.cruds", ["patient/CarePlan.rs"], False),  # more letters
        ("patient/CarePlan.rs", ["patient/*.cruds"], True),  # under a wildcard type
        ("patient/*.rs", ["patient/CarePlan.cruds"], False),  # a wildcard is not under one type
        ("patient/Task.rs", ["patient/CarePlan.cruds"], False),  # another type
        ("user/CarePlan.rs", ["patient/CarePlan.rs"], False),  # another level, wider
        ("patient/CarePlan.rs", ["user/CarePlan.rs"], False),  # another level, even if narrower
        ("system/Task.rs", ["user/*.cruds"], False),
        ("patient/Task.read", ["patient/Task.rs"], True),  # v1 under v2
        ("patient/Task.write", ["patient/Task.rs"], False),
        ("patient/Task.rs", ["patient/Task.read"], True),  # v2 under v1
        ("user/Task.cud", ["user/*.*"], True),
        ("patient/Observation.rs?category=laboratory", ["patient/Observation.rs"], True),  # narrowed by a query
        ("patient/Observation.rs", ["patient/Observation.rs?category=laboratory"], False),  # query dropped
        ("patient/Observation.r?category=laboratory", ["patient/Observation.rs?category=laboratory"], True),
        ("patient/Observation.rs?category=vital-signs", ["patient/Observation.rs?category=laboratory"], False),
        ("patient/CarePlan.sr", ["patient/*.cruds"], False),  # malformed: never covered
        ("patient/CarePlan.r", ["patient/CarePlan.xyz"], False),  # a malformed registration covers nothing
    ],
)
def test_covered_by(requested: str, registered: list[str], covered: bool) -> None:
    assert covered_by(requested, registered) is covered
