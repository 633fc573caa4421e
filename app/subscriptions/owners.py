"""The token a Subscription was written with, kept so that it never notifies of what that token could
not read (a ``patient/`` token subscribes only within its patient's compartment).

The author of a write reaches the write hooks through the read gate
(``app.storage.gate.Author``); the outbox stores it beside the
subscription's delivery state, and the active-subscription view turns it
back into a read gate that every match must pass. A write without a token
(the server's own, or a server without authorization) keeps the owner the
Subscription had.
"""

from __future__ import annotations

from typing import Any

import orjson

from app.interactions.context import FhirContext
from app.interactions.request_context import Caller
from app.smart.scopes import parse_permissions
from app.storage.gate import OPEN, Author, ReadGate
from app.storage.index_tables import IndexRows


def owner_text(author: Author) -> str:
    return orjson.dumps({"name": author.name, "scope": author.scope, "compartment": author.compartment}).decode()


def owner_gate(ctx: FhirContext, text: str | None) -> ReadGate:
    """The read gate of a stored owner (``OPEN`` for none)."""
    if text is None:
        return OPEN
    owner: dict[str, Any] = orjson.loads(text)
    stored = owner.get("compartment")
    compartment = (str(stored[0]), str(stored[1])) if stored else None
    return author_gate(ctx, Author(owner["name"], owner.get("scope"), compartment))


def author_gate(ctx: FhirContext, author: Author) -> ReadGate:
    """The read gate of the token an ``Author`` stands for."""
    if author.scope is None:
        return OPEN if author.compartment is None else ctx.read_gate(Caller(author.name, author.compartment))
    permissions = parse_permissions(author.scope)
    return ctx.read_gate(Caller.with_token(author.name, permissions, author.compartment, None))


def saw_removed(gate: ReadGate, resource_type: str, resource_id: str, rows: IndexRows) -> bool:
    """Whether the owner could read a resource just deleted, judged on its last version's index rows:
    only a compartment can be judged so; what granular scopes reach needs rows that are gone."""
    reach = gate.read_reach(resource_type)
    if reach == "all":
        return True
    if reach != "compartment" or gate.compartment is None:
        return False
    compartment_type, compartment_id = gate.compartment
    if (resource_type, resource_id) == gate.compartment:
        return True
    hashes = set(gate.members.get(resource_type, ()))
    return any(
        row["param_hash"] in hashes and row["target_type"] == compartment_type and row["target_id"] == compartment_id
        for row in rows.get("reference", ())
    )


def written_by(text: str | None, caller_name: str) -> bool:
    """Whether the token that wrote a Subscription (``subscription_state.owner``) belongs to this client."""
    return text is not None and orjson.loads(text).get("name") == caller_name
