"""Websocket binding tokens of Subscriptions (Backport IG 1.1 ``$get-ws-binding-token``).

A browser cannot set an ``Authorization`` header on a websocket, so the
Backport IG lets a client that may read a Subscription ask for a short-lived
token, connect to the websocket URL without credentials, and send
``bind-with-token [token]``. A token binds one Subscription, any number of
times until it expires; only its SHA-256 is stored, so the table gives
nothing away. Any server process can redeem a token another one issued.
hl7.org/fhir/uv/subscriptions-backport/OperationDefinition-backport-subscription-get-ws-binding-token.html
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta
from typing import Any

from sqlalchemy import delete, insert, select

from app.errors import Forbidden, InvalidRequest
from app.interactions.context import FhirContext, format_instant, utc_now
from app.storage.gate import ReadGate
from app.subscriptions.backport import PAYLOAD_CONTENT, is_topic_based
from app.subscriptions.operations import readable_subscription
from app.subscriptions.owners import written_by
from app.subscriptions.tables import subscription_state, subscription_tokens

TOKEN_SECONDS = 600  # how long a binding token can be redeemed
T = subscription_tokens.c
S = subscription_state.c


def carries_resources(body: dict[str, Any]) -> bool:
    """A topic-based Subscription whose notifications name or carry resources (content not empty)."""
    if not is_topic_based(body):
        return False
    extensions = ((body.get("channel") or {}).get("_payload") or {}).get("extension") or []
    return any(
        isinstance(e, dict) and e.get("url") == PAYLOAD_CONTENT and e.get("valueCode") in ("id-only", "full-resource")
        for e in extensions
    )


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def issue_token(
    ctx: FhirContext, caller_name: str, gate: ReadGate, subscription_id: str, websocket_url: str
) -> dict[str, Any]:
    """A new token for a websocket Subscription the caller may read, as the operation's Parameters.
    Notifications that carry resources or their ids were matched for the token that wrote the
    Subscription, so only that client (or an unrestricted caller) may receive them."""
    gate.require("Subscription", "r")
    ctx.require_known("Subscription", subscription_id)
    async with ctx.db.read() as conn:
        body = await readable_subscription(conn, gate, subscription_id)
        owner = (await conn.execute(select(S.owner).where(S.subscription_id == subscription_id))).scalar()
    if (body.get("channel") or {}).get("type") != "websocket":
        raise InvalidRequest(f"Subscription/{subscription_id} does not use the websocket channel")
    if not gate.open and not written_by(owner, caller_name) and carries_resources(body):
        raise Forbidden(f"Subscription/{subscription_id} notifies of resources read by the client that wrote it")
    token = secrets.token_urlsafe(32)
    now = utc_now()
    expires = now + timedelta(seconds=TOKEN_SECONDS)
    async with ctx.db.write() as conn:
        await conn.execute(delete(subscription_tokens).where(T.expires < now))
        await conn.execute(
            insert(subscription_tokens).values(
                token_hash=_digest(token), subscription_id=subscription_id, expires=expires
            )
        )
    return {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "token", "valueString": token},
            {"name": "expiration", "valueDateTime": format_instant(expires)},
            {"name": "subscription", "valueString": subscription_id},
            {"name": "websocket-url", "valueUrl": websocket_url},
        ],
    }


async def redeem_token(ctx: FhirContext, token: str) -> str | None:
    """The Subscription a token binds, while it has not expired."""
    if not token or len(token) > 200:
        return None
    async with ctx.db.read() as conn:
        found = await conn.execute(
            select(T.subscription_id).where(T.token_hash == _digest(token), T.expires >= utc_now())
        )
        return found.scalar_one_or_none()
