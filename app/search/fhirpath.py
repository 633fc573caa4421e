"""FHIRPath for the server: compiling expressions once, splitting them, and safe regular expressions.

fhirpathpy implements ``matches()`` and ``replaceMatches()`` with Python's
backtracking ``re``: ``Patient.name.family.matches('^(a+)+$')`` on a
28-character name ran 6.6 s, and an expression like that in a client's
SearchParameter runs on every write of its base type. Here both functions
are replaced (fhirpathpy's ``userInvocationTable``) by RE2
(``google-re2``), whose matching time is linear in the input; a pattern
RE2 does not support (backreferences, lookaround) is an error, so the
SearchParameter or patch carrying it is refused when it is written
(hl7.org/fhir/R4/fhirpath.html#functions: the regex syntax is
implementation-dependent beyond the common core).

Every expression the server evaluates goes through ``compile_fhirpath``,
which also bounds the length of an expression (fhirpathpy's parser is
recursive).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import lru_cache
from typing import Any

import fhirpathpy
import re2
from fhirpathpy.models import models

LOG = logging.getLogger("fhir.fhirpath")
R4_MODEL = models["r4"]
MAX_EXPRESSION_CHARS = 4096
MAX_PATTERN_CHARS = 1024
_RE2_MEMORY = 8 << 20


class FhirPathError(ValueError):
    """An expression or a pattern the server will not run."""


def split_top_level(text: str, separator: str) -> tuple[list[str], bool]:
    """``text`` split on ``separator`` outside parentheses and quoted strings (``\\'`` escapes a quote);
    also whether the parentheses and quotes were balanced."""
    parts: list[str] = []
    depth = 0
    quoted = False
    start = 0
    for index, char in enumerate(text):
        if char == "'" and (index == 0 or text[index - 1] != "\\"):
            quoted = not quoted
        elif quoted:
            continue
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == separator and depth == 0:
            parts.append(text[start:index])
            start = index + 1
    parts.append(text[start:])
    return parts, depth == 0 and not quoted


def split_union(expression: str) -> list[str]:
    """``a | b`` at top level (not inside parentheses or quotes)."""
    parts, _ = split_top_level(expression, "|")
    return [p.strip() for p in parts if p.strip()]


@lru_cache(maxsize=512)
def _pattern(regex: str, dot_matches_newline: bool) -> Any:
    if len(regex) > MAX_PATTERN_CHARS:
        raise FhirPathError(f"regular expression longer than {MAX_PATTERN_CHARS} characters")
    options = re2.Options()
    options.log_errors = False
    options.max_mem = _RE2_MEMORY
    options.dot_nl = dot_matches_newline
    try:
        return re2.compile(regex, options=options)
    except re2.error as exc:
        detail = exc.args[0].decode(errors="replace") if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        raise FhirPathError(f"regular expression '{regex[:80]}' is not supported: {detail}") from None


def _one_string(inputs: list[Any], function: str) -> str:
    if len(inputs) != 1 or not isinstance(inputs[0], str):
        raise FhirPathError(f"{function}() needs a single string")
    return inputs[0]


def _matches(inputs: list[Any], regex: Any) -> Any:
    if not regex or not inputs:
        return []
    return _pattern(str(regex), True).search(_one_string(inputs, "matches")) is not None


def _replace_matches(inputs: list[Any], regex: Any, replacement: Any) -> Any:
    if not inputs or isinstance(regex, list) or isinstance(replacement, list):
        return []
    text = _one_string(inputs, "replaceMatches")
    template = re2.compile(r"\$(\d+)").sub(r"\\\1", str(replacement))  # FHIRPath's $1 is RE2's \1
    return _pattern(str(regex), False).sub(template, text)


SAFE_FUNCTIONS: dict[str, dict[str, Any]] = {
    "matches": {"fn": _matches, "arity": {1: ["String"]}, "nullable_input": True},
    "replaceMatches": {"fn": _replace_matches, "arity": {2: ["String", "String"]}, "nullable_input": True},
}
_OPTIONS = {"userInvocationTable": SAFE_FUNCTIONS}


# a string literal passed to matches() or replaceMatches(); FHIRPath escapes a quote as \'
_REGEX_LITERAL = re2.compile(r"(?:matches|replaceMatches)\(\s*'((?:[^'\\]|\\.)*)'")
_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "f": "\f", "'": "'", '"': '"', "`": "`", "/": "/", "\\": "\\"}


def _unescape(literal: str) -> str:
    out: list[str] = []
    chars = iter(literal)
    for char in chars:
        if char == "\\":
            following = next(chars, "")
            out.append(_ESCAPES.get(following, "\\" + following))
        else:
            out.append(char)
    return "".join(out)


def check_patterns(expression: str) -> None:
    """Compile the literal patterns of ``matches``/``replaceMatches`` now, so an expression whose
    pattern RE2 refuses fails when it is written rather than on every evaluation."""
    for literal in _REGEX_LITERAL.findall(expression):
        _pattern(_unescape(literal), True)


def compile_fhirpath(expression: str, model: dict[str, Any] | None = R4_MODEL) -> Callable[..., list[Any]]:
    """fhirpathpy's compiled form, with RE2 behind ``matches``/``replaceMatches``."""
    if len(expression) > MAX_EXPRESSION_CHARS:
        raise FhirPathError(f"FHIRPath expression longer than {MAX_EXPRESSION_CHARS} characters")
    check_patterns(expression)
    compiled: Callable[..., list[Any]] = fhirpathpy.compile(expression, model, options=_OPTIONS)
    return compiled


_INTERNALS = ("<class", "object has no attribute", "NoneType", "recursion", "Traceback", "object is not", "'int'")


def explain(exc: Exception) -> str:
    """What went wrong with an expression, in words a client can use (never Python internals)."""
    if isinstance(exc, FhirPathError):
        return str(exc)
    text = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
    if not text or any(marker in text for marker in _INTERNALS):
        return "it is not a FHIRPath expression this server can evaluate"
    return text


def skipping_errors(compiled: Callable[..., list[Any]], expression: str) -> Callable[..., list[Any]]:
    """``compiled``, giving no values where it fails on a resource (a dynamic pattern RE2 refuses, a
    function applied to the wrong kind of value): a search parameter that cannot be evaluated on one
    resource leaves that resource unindexed for it, as HAPI does, instead of refusing the write."""

    def evaluate(*args: Any) -> list[Any]:
        try:
            return compiled(*args)
        except Exception as exc:  # fhirpathpy raises plain exceptions
            LOG.warning("FHIRPath %r failed on a resource: %s", expression[:200], str(exc)[:200])
            return []

    return evaluate


@lru_cache(maxsize=256)
def cached_condition(expression: str) -> Callable[..., list[Any]]:
    """A condition compiled once for repeated use (FHIRPath Patch ``where()`` on every candidate)."""
    return compile_fhirpath(expression, None)
