"""The server's FHIRPath layer: linear-time regular expressions, patterns checked when compiled."""

from __future__ import annotations

import time

import pytest

from app.search.fhirpath import FhirPathError, compile_fhirpath, explain, split_top_level, split_union


@pytest.mark.alone
def test_catastrophic_patterns_run_in_linear_time() -> None:
    matches = compile_fhirpath("Patient.name.family.where(matches('^(a+)+$'))")
    patient = {"resourceType": "Patient", "name": [{"family": "a" * 28 + "!"}]}
    started = time.perf_counter()
    assert matches(patient) == []
    assert time.perf_counter() - started < 0.1
    long_name = {"resourceType": "Patient", "name": [{"family": "a" * 100_000 + "!"}]}
    started = time.perf_counter()
    assert matches(long_name) == []
    assert time.perf_counter() - started < 0.5


def test_matches_and_replace_matches_behave_as_fhirpath_says() -> None:
    patient = {"resourceType": "Patient", "name": [{"family": "O'Brien-Smith"}]}
    assert compile_fhirpath(r"Patient.name.family.matches('^O\'B')")(patient) == [True]
    assert compile_fhirpath("Patient.name.family.matches('smith')")(patient) == [False]
    replaced = compile_fhirpath("Patient.name.family.replaceMatches('(\\\\w+)-(\\\\w+)', '$2 $1')")(patient)
    assert replaced == ["O'Smith Brien"]


@pytest.mark.parametrize("pattern", ["(a)\\\\1", "(?=a)b", "(?<!x)y"])
def test_patterns_re2_cannot_run_are_refused_when_compiled(pattern: str) -> None:
    with pytest.raises(FhirPathError) as caught:
        compile_fhirpath(f"Patient.name.family.matches('{pattern}')")
    assert "not supported" in explain(caught.value)


def test_overlong_expressions_and_patterns_are_refused() -> None:
    with pytest.raises(FhirPathError):
        compile_fhirpath("Patient.name" + ".given" * 1000)
    with pytest.raises(FhirPathError):
        compile_fhirpath(f"Patient.name.family.matches('{'a' * 2000}')")


def test_explanations_hide_python_internals() -> None:
    assert explain(AttributeError("'NoneType' object has no attribute 'x'")) == (
        "it is not a FHIRPath expression this server can evaluate"
    )
    assert explain(RecursionError("maximum recursion depth exceeded")).startswith("it is not")
    assert explain(ValueError("line 1:4 mismatched input")) == "line 1:4 mismatched input"


def test_top_level_splitting_ignores_quotes_and_parentheses() -> None:
    assert split_union("A.b | (A.c as X) | A.d.where(e = 'x|y')") == ["A.b", "(A.c as X)", "A.d.where(e = 'x|y')"]
    assert split_top_level("Task.note.where(text = 'a.b').first()", ".") == (
        ["Task", "note", "where(text = 'a.b')", "first()"],
        True,
    )
    assert split_top_level("Task.where(x = 'open", ".")[1] is False
