"""FHIR JSON in and out (json.html): exact decimals, and what the parser refuses before anything else looks."""

from __future__ import annotations

import copy
import pickle

import pytest

from app import fhirjson
from app.errors import InvalidRequest


@pytest.mark.parametrize("text", ["1.10", "100.000", "12345678901234567.89", "-0.0", "2e3", "1E-7", "0.000100"])
def test_decimals_render_as_written(text: str) -> None:
    parsed = fhirjson.loads(f'{{"value":{text}}}'.encode())
    assert fhirjson.dumps(parsed) == f'{{"value":{text}}}'.encode()
    assert fhirjson.dumps(parsed, pretty=True) == f'{{\n  "value": {text}\n}}'.encode()
    assert float(parsed["value"]) == float(text)
    assert copy.deepcopy(parsed)["value"].text == text
    assert pickle.loads(pickle.dumps(parsed["value"])).text == text


def test_integers_stay_integers_and_long_ones_keep_their_digits() -> None:
    parsed = fhirjson.loads(b'{"a":42,"b":123456789012345678901234567890}')
    assert parsed["a"] == 42 and type(parsed["a"]) is int
    assert fhirjson.dumps(parsed) == b'{"a":42,"b":123456789012345678901234567890}'


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b'{"a":1,"a":2}', "appears twice"),
        (b'{"a":NaN}', "not valid JSON"),
        (b'{"a":Infinity}', "not valid JSON"),
        (b"\xff\xfe", "not UTF-8"),
        ("\ufeff{}".encode(), "byte-order mark"),
        (b"[" * 100_000, "nested too deeply"),
        (b'{"a":' + b"[" * 300 + b"]" * 300 + b"}", "nested too deeply"),
        (b'{"a":1', "not valid JSON"),
    ],
)
def test_what_is_not_fhir_json_is_refused(raw: bytes, message: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        fhirjson.loads(raw)
    assert message in refused.value.message


@pytest.mark.parametrize(
    ("raw", "where"),
    [
        (rb'{"resourceType":"Patient","name":[{"family":"a\u0007b"}]}', "Patient.name[0].family"),
        (rb'{"resourceType":"Patient","name":[{"family":"a\ud800"}]}', "Patient.name[0].family"),
        (rb'{"resourceType":"Patient","\u0001":1}', "Patient"),
        (rb'{"resourceType":"Patient","gender":"\udc00x"}', "Patient.gender"),
    ],
)
def test_control_characters_and_unpaired_surrogates_are_refused_where_they_are(raw: bytes, where: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        fhirjson.loads(raw)
    assert refused.value.expression == [where]
    assert refused.value.message.startswith(where)


def test_paired_surrogates_tab_and_newlines_are_text() -> None:
    parsed = fhirjson.loads(rb'{"a":"\ud83d\ude00\t\n\r"}')
    assert parsed == {"a": "\U0001f600\t\n\r"}


def test_checking_strings_can_be_left_to_the_caller() -> None:
    bundle = fhirjson.loads(rb'{"entry":[{"a":"ok"},{"a":"\u0000"}]}', check_strings=False)
    fhirjson.refuse_bad_strings(bundle["entry"][0], "Bundle.entry[0]")
    with pytest.raises(InvalidRequest) as refused:
        fhirjson.refuse_bad_strings(bundle["entry"][1], "Bundle.entry[1]")
    assert refused.value.expression == ["Bundle.entry[1].a"]
