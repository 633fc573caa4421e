"""FHIR JSON in and out, with decimals kept exactly as written (hl7.org/fhir/R4/json.html).

json.html: "the number of decimal places SHALL be preserved": ``1.10`` must
come back as ``1.10``, ``100.000`` as ``100.000``, and
``12345678901234567.89`` must not be rounded through a binary float.
orjson parses every number with a fraction into a float and loses all
three, so bodies are parsed here with the standard library's C scanner,
which hands each number's text to ``parse_float``/``parse_int``: a number
with a fraction or exponent, or an integer too long for 64 bits, becomes a
``JsonNumber``, a float that remembers its text. Python code (validation,
FHIRPath, comparisons) sees an ordinary float; ``dumps`` writes the text
back verbatim through ``orjson.Fragment``.

The parser also refuses what JSON allows but FHIR does not or what would
harm the server: duplicate keys (json.html: a property appears once),
``NaN``/``Infinity``, bytes that are not UTF-8, a byte-order mark, and
nesting deep enough to exhaust the parser's recursion.
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

from app.errors import InvalidRequest

FHIR_JSON = "application/fhir+json"  # the media type (http.html#mime-type)
# orjson renders at most 254 levels of nesting; a body must be renderable to be stored.
_DEEPEST = 254
# 64-bit integers survive orjson; longer ones are kept as text.
_LONGEST_PLAIN_INTEGER = 18


class JsonNumber(float):
    """A JSON number that keeps the exact text it was written as."""

    __slots__ = ("text",)
    text: str

    def __new__(cls, text: str) -> JsonNumber:
        number = super().__new__(cls, text)
        number.text = text
        return number

    def __copy__(self) -> JsonNumber:
        return self

    def __deepcopy__(self, memo: object) -> JsonNumber:
        return self

    def __reduce__(self) -> tuple[type[JsonNumber], tuple[str]]:
        return JsonNumber, (self.text,)


class DuplicateKey(ValueError):
    """An object names the same property twice."""

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _parse_int(text: str) -> int | JsonNumber:
    return int(text) if len(text) <= _LONGEST_PLAIN_INTEGER else JsonNumber(text)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise DuplicateKey(key)
            seen.add(key)
    return result


_DECODER = json.JSONDecoder(
    parse_float=JsonNumber, parse_int=_parse_int, parse_constant=_refuse_constant, object_pairs_hook=_object
)


def loads(raw: bytes | str, check_strings: bool = True) -> Any:
    """Parse a request body or a stored body; InvalidRequest (400) for anything that is not FHIR JSON.

    ``check_strings=False`` leaves control characters and unpaired surrogates to the caller: a batch
    refuses only the entry that holds one (``refuse_bad_strings`` per entry)."""
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
    except UnicodeDecodeError as exc:
        raise InvalidRequest(f"the body is not UTF-8 (byte {exc.start})") from None
    if text.startswith("\ufeff"):
        raise InvalidRequest("the body starts with a byte-order mark; send plain UTF-8 JSON")
    try:
        parsed = _DECODER.decode(text)
    except DuplicateKey as exc:
        key = _printable(exc.key[:80])
        raise InvalidRequest(f"the property '{key}' appears twice in one object") from None
    except json.JSONDecodeError as exc:
        raise InvalidRequest(f"the body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise InvalidRequest("the body is nested too deeply") from None
    except ValueError as exc:  # NaN/Infinity
        raise InvalidRequest(f"the body is not valid JSON: {str(exc)[:120]}") from None
    # A JSON escape is the only way a control character or an unpaired surrogate gets into the text (the
    # bytes are strict UTF-8 and the decoder refuses raw control characters): look only when one is there.
    if len(text) > _DEEPEST:  # only a text this long can nest deeper than orjson renders
        try:
            orjson.dumps(parsed, default=_default)
        except orjson.JSONEncodeError as exc:
            if "recursion" in str(exc).lower():
                raise InvalidRequest("the body is nested too deeply") from None
    if check_strings and "\\u" in text:
        root = parsed.get("resourceType") if isinstance(parsed, dict) else None
        refuse_bad_strings(parsed, root if isinstance(root, str) and root.isalpha() else "$")
    return parsed


def refuse_bad_strings(node: Any, path: str) -> None:
    """InvalidRequest naming the first string or property name under ``node`` that holds a control
    character or an unpaired surrogate (neither can be stored as FHIR text)."""
    found = _bad_string(node, path)
    if found is not None:
        where, in_name = found
        what = "a property name" if in_name else "strings"
        raise InvalidRequest(
            f"{where}: {what} must not hold control characters (other than tab, LF and CR) or unpaired surrogates",
            [] if where.startswith("$") else [where],
        )


_BAD_CHARACTERS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff]")


def _bad_string(node: Any, path: str) -> tuple[str, bool] | None:
    """(where, whether in a property name) of the first string holding a forbidden character."""
    if isinstance(node, str):
        return (path, False) if _BAD_CHARACTERS.search(node) else None
    if isinstance(node, dict):
        for key, value in node.items():
            if _BAD_CHARACTERS.search(key):
                return path, True
            found = _bad_string(value, f"{path}.{key[:40]}")
            if found:
                return found
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found = _bad_string(value, f"{path}[{index}]")
            if found:
                return found
    return None


def _printable(text: str) -> str:
    """``text`` safe to echo in a message: forbidden characters shown as escapes."""
    return _BAD_CHARACTERS.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def _default(value: Any) -> Any:
    if isinstance(value, JsonNumber):
        return orjson.Fragment(value.text)
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def dumps(value: Any, pretty: bool = False) -> bytes:
    """JSON bytes, decimals as they were written."""
    return orjson.dumps(value, default=_default, option=orjson.OPT_INDENT_2 if pretty else 0)


def reformat(body: bytes, pretty: bool) -> bytes:
    """Stored bytes as they are, or indented for ``_pretty=true`` (decimals unchanged)."""
    return dumps(loads(body), pretty=True) if pretty else body
