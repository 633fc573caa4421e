"""How big one search may be, checked while parsing, before any SQL exists (search.html).

A search is a SQL statement whose size grows with its parameters, OR values,
chain links and ``_has`` levels; unbounded, one request of 1,000 ``name=a``
clauses held a PostgreSQL connection for minutes, and SQLite refuses
statements nested past a fixed depth. These bounds keep every search well
inside both databases' limits and are published in the README and the
CapabilityStatement. A search over them is a 400 naming the parameter.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from app.errors import InvalidRequest

MAX_PARAMETERS: Final = 30  # search parameters (ANDed); result parameters such as _count are not counted
MAX_VALUES_PER_PARAMETER: Final = 100  # comma-separated (ORed) values of one parameter
MAX_VALUES: Final = 300  # values over the whole search
MAX_CHAIN_LINKS: Final = 3  # subject.organization.partof.name has three links
MAX_HAS_LEVELS: Final = 2  # _has:A:x:_has:B:y:param nests two levels
MAX_NESTING: Final = 4  # chain links and _has levels of one parameter together
MAX_CHAIN_TARGETS: Final = 400  # target types an untyped chain may fan out to, over all its links
MAX_INCLUDES: Final = 10  # _include and _revinclude parameters
MAX_SORT_KEYS: Final = 5
MAX_VALUE_CHARACTERS: Final = 16_384  # one parameter's raw value (long identifiers are searchable)

DOCUMENTED: Final = {
    "searchMaxParameters": MAX_PARAMETERS,
    "searchMaxValuesPerParameter": MAX_VALUES_PER_PARAMETER,
    "searchMaxValues": MAX_VALUES,
    "searchMaxChainLinks": MAX_CHAIN_LINKS,
    "searchMaxHasLevels": MAX_HAS_LEVELS,
    "searchMaxIncludes": MAX_INCLUDES,
    "searchMaxSortKeys": MAX_SORT_KEYS,
}


def check_key(name: str) -> None:
    """Chain and ``_has`` depth of one parameter name (``subject:Patient.organization.name``)."""
    has_levels = name.count("_has:")
    links = name.count(".")
    if links > MAX_CHAIN_LINKS:
        raise InvalidRequest(
            f"'{name[:120]}' chains {links} references; at most {MAX_CHAIN_LINKS} are supported", [name]
        )
    if has_levels > MAX_HAS_LEVELS:
        raise InvalidRequest(
            f"'{name[:120]}' nests _has {has_levels} deep; at most {MAX_HAS_LEVELS} are supported", [name]
        )
    if links + has_levels > MAX_NESTING:
        raise InvalidRequest(
            f"'{name[:120]}' nests {links + has_levels} chain links and _has levels; at most {MAX_NESTING} together",
            [name],
        )


def check_parameter_count(pairs: Sequence[tuple[str, str]], not_counted: frozenset[str]) -> None:
    """Every search parameter counts, known or not: even ignored ones cost parsing."""
    count = sum(1 for name, _ in pairs if name not in not_counted)
    if count > MAX_PARAMETERS:
        raise InvalidRequest(f"the search has {count} parameters; at most {MAX_PARAMETERS}", ["_search"])


def check_value(name: str, raw: str) -> None:
    if len(raw) > MAX_VALUE_CHARACTERS:
        raise InvalidRequest(f"the value of '{name[:80]}' is longer than {MAX_VALUE_CHARACTERS} characters", [name])
    if "\x00" in raw or "\x00" in name:
        raise InvalidRequest(f"'{name[:80]}' contains a NUL character", [name])


class Budget:
    """Counts what a search parses against the bounds above; 400 as soon as one is passed."""

    __slots__ = ("chain_targets", "parameters", "values")

    def __init__(self) -> None:
        self.parameters = 0
        self.values = 0
        self.chain_targets = 0

    def add_parameter(self, name: str, values: int) -> None:
        self.parameters += 1
        self.values += values
        if self.parameters > MAX_PARAMETERS:
            raise InvalidRequest(f"the search has more than {MAX_PARAMETERS} parameters", [name])
        if values > MAX_VALUES_PER_PARAMETER:
            raise InvalidRequest(f"'{name[:80]}' has {values} values; at most {MAX_VALUES_PER_PARAMETER}", [name])
        if self.values > MAX_VALUES:
            raise InvalidRequest(f"the search has more than {MAX_VALUES} values in all", [name])

    def add_chain_targets(self, name: str, count: int) -> None:
        self.chain_targets += count
        if self.chain_targets > MAX_CHAIN_TARGETS:
            raise InvalidRequest(
                f"'{name[:120]}' reaches more than {MAX_CHAIN_TARGETS} target types; name the type in the chain "
                "(for example subject:Patient.name)",
                [name],
            )
