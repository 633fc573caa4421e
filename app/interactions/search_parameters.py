"""SearchParameters that clients add become live parameters (search.html#custom).

A stored ``SearchParameter`` with ``status = active`` (as HAPI requires) is
merged into the official registry: it can be searched, sorted and included
at once, and is listed in the CapabilityStatement. Resources written before
it have no index rows for it until ``$reindex`` (``app.interactions.reindex``).

Each server process holds its own registry. The process that stores a
SearchParameter reloads at once; every process also reloads at start-up and
whenever the newest SearchParameter change is newer than the one it last
saw (checked every ``FHIR_SEARCH_PARAMETER_REFRESH_SECONDS`` by a cheap
indexed query), so several workers converge within that interval.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from sqlalchemy import func, select

from app.errors import InvalidResource
from app.interactions.context import ContextHolder
from app.search.definitions import client_definition
from app.search.registry import SearchRegistry
from app.storage.tables import resources

LOG = logging.getLogger("fhir.search_parameters")
_R = resources.c
_NEWEST_CHANGE = select(func.max(_R.last_updated), func.count()).where(_R.resource_type == "SearchParameter")
_ACTIVE = select(_R.body).where(_R.resource_type == "SearchParameter", _R.deleted.is_(False))


def check_search_parameter(body: dict[str, Any], resource_types: frozenset[str], official: SearchRegistry) -> None:
    """Write-time rules for an active SearchParameter (400 otherwise): this server can index it, and it
    does not take the code of an official parameter of one of its bases (search.html#custom: a server
    keeps the meaning of the standard parameters; HAPI refuses such overrides too)."""
    if body.get("status") != "active":
        return
    client_definition(body, resource_types)
    code, url = body.get("code"), body.get("url")
    bases = list(body.get("base", []))
    if any(b in ("Resource", "DomainResource") for b in bases):
        bases = sorted(resource_types)
    taken = [b for b in bases if (p := official.get(b, str(code))) is not None and p.url != url]
    if taken:
        shown = ", ".join(taken[:5]) + (" ..." if len(taken) > 5 else "")
        raise InvalidResource(
            [(f"'{code}' is an official search parameter of {shown}; choose another code", "SearchParameter.code")]
        )


async def reload_search_parameters(holder: ContextHolder) -> int:
    """Rebuild the registry from the official set plus every active stored SearchParameter and install a
    context with it; the number of active ones."""
    ctx = holder.current
    async with ctx.db.read() as conn:
        seen = tuple((await conn.execute(_NEWEST_CHANGE)).one())
        bodies = [orjson.loads(row[0]) for row in await conn.execute(_ACTIVE)]
    assert ctx.base_registry is not None
    registry = ctx.base_registry
    active = 0
    for body in sorted(bodies, key=lambda b: (b.get("meta", {}).get("lastUpdated", ""), b.get("id", ""))):
        if body.get("status") != "active":
            continue
        try:
            definition = client_definition(body, ctx.resource_types)
        except InvalidResource as exc:  # stored before a rule existed, or by an older version
            LOG.warning("SearchParameter/%s is not usable: %s", body.get("id"), exc)
            continue
        registry = registry.with_parameter(definition, ctx.resource_types)
        active += 1
    holder.current = ctx.with_registry(registry)
    holder.search_parameters_seen = seen
    return active


async def refresh_if_changed(holder: ContextHolder) -> bool:
    """Reload when a SearchParameter changed since the last load (in any process); True if it did."""
    async with holder.current.db.read() as conn:
        seen = tuple((await conn.execute(_NEWEST_CHANGE)).one())
    if seen == holder.search_parameters_seen:
        return False
    await reload_search_parameters(holder)
    return True


async def reload_after_write(holder: ContextHolder, resource_type: str) -> None:
    """A stored SearchParameter changes what can be searched: reload this process's registry now."""
    if resource_type == "SearchParameter":
        await reload_search_parameters(holder)
