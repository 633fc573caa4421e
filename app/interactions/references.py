"""References a written resource carries: finding, checking and rewriting them.

Two kinds need the server's help before a resource can be stored
(hl7.org/fhir/R4/http.html#trules):

* ``urn:uuid:`` / ``urn:oid:`` references name another entry of the same
  transaction Bundle; outside a transaction nothing can resolve them, so a
  plain create or update carrying one is refused (400) rather than stored
  pointing nowhere.
* conditional references, ``Patient?identifier=http://hospital.org/mrn|42``,
  name "the one resource matching this search". Transactions resolve them
  (http.html#trules), and so do plain creates and updates here, with the
  same rules: one match is used, none is 412 (as HAPI answers), several 412.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from app.errors import InvalidRequest, MultipleMatches, NoMatch
from app.interactions.context import FhirContext
from app.interactions.criteria import conditional_criteria
from app.interactions.search import find_ids
from app.storage.gate import OPEN, ReadGate

BUNDLE_LOCAL_PREFIXES = ("urn:uuid:", "urn:oid:")


def is_conditional_reference(reference: str) -> bool:
    """``Type?query`` (a search in place of an id)."""
    if "?" not in reference:
        return False
    head, question, _ = reference.partition("?")
    return bool(question) and "/" not in head and head[:1].isupper()


def rewrite_references(value: Any, resolve: Callable[[str], str | None]) -> Any:
    """Every ``reference`` string anywhere in ``value`` replaced where ``resolve`` knows it (in place)."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "reference" and isinstance(item, str):
                replacement = resolve(item)
                if replacement is not None:
                    value[key] = replacement
            else:
                rewrite_references(item, resolve)
    elif isinstance(value, list):
        for item in value:
            rewrite_references(item, resolve)
    return value


def collect_references(value: Any, out: set[str]) -> set[str]:
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "reference" and isinstance(item, str):
                out.add(item)
            else:
                collect_references(item, out)
    elif isinstance(value, list):
        for item in value:
            collect_references(item, out)
    return out


def conditional_references(references: Iterable[str]) -> list[str]:
    """The distinct conditional references among ``references``, in first-seen order."""
    return list(dict.fromkeys(r for r in references if is_conditional_reference(r)))


def refuse_bundle_local(references: Iterable[str]) -> None:
    """Outside a transaction a ``urn:uuid:`` reference can never resolve (400)."""
    for reference in references:
        if reference.startswith(BUNDLE_LOCAL_PREFIXES):
            raise InvalidRequest(
                f"reference '{reference[:120]}' names a Bundle entry; such references are only resolved "
                "inside a transaction Bundle",
                ["reference"],
            )


async def match_conditional_reference(
    ctx: FhirContext, conn: AsyncConnection, reference: str, gate: ReadGate = OPEN
) -> list[str]:
    """Ids of ``Type?query``'s matches the caller may see (at most two: enough to tell one from several)."""
    resource_type, _, query = reference.partition("?")
    if resource_type not in ctx.resource_types:
        raise InvalidRequest(f"conditional reference '{reference[:120]}' names an unknown type")
    criteria = conditional_criteria(ctx, resource_type, query, "reference")
    return await find_ids(conn, criteria, 2, gate)


async def resolve_conditional_reference(
    ctx: FhirContext, conn: AsyncConnection, reference: str, gate: ReadGate = OPEN
) -> str:
    """``Type/id`` of the one match; NoMatch or MultipleMatches (412) otherwise."""
    matches = await match_conditional_reference(ctx, conn, reference, gate)
    if not matches:
        raise NoMatch(f"conditional reference '{reference[:120]}' matches no resource")
    if len(matches) > 1:
        raise MultipleMatches(f"conditional reference '{reference[:120]}' matches more than one resource")
    return f"{reference.partition('?')[0]}/{matches[0]}"


async def resolve_in_body(
    ctx: FhirContext, conn: AsyncConnection, body: dict[str, Any], references: list[str], gate: ReadGate = OPEN
) -> None:
    """Replace each conditional reference of ``body`` (in place) by the ``Type/id`` it matches."""
    resolved = {reference: await resolve_conditional_reference(ctx, conn, reference, gate) for reference in references}
    rewrite_references(body, resolved.get)
