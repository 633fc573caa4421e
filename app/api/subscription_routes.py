"""The Subscriptions Backport IG operations (``$status``, ``$events``, ``$get-ws-binding-token``) and the
read-only topic list at ``[base]/SubscriptionTopic``.

Operation parameters come from the query string or, with POST, from a
Parameters body (hl7.org/fhir/R4/operations.html#request); both may be
used together.
"""

from __future__ import annotations

from typing import Annotated, Any, cast

from fastapi import Depends
from starlette.requests import Request
from starlette.responses import Response

from app.api.deps import Ctx, RouteContext
from app.api.negotiation import negotiate
from app.api.outcomes import dumps
from app.api.request_parts import resource_body
from app.errors import InvalidRequest, NotFound
from app.subscriptions import binding, operations
from app.subscriptions.service import Subscriptions

TOPIC_SEARCH = ("url", "resource")  # what [base]/SubscriptionTopic can be searched by


async def subscriptions(request: Request) -> Subscriptions:
    return cast(Subscriptions, request.app.state.subscriptions)


SubscriptionsDep = Annotated[Subscriptions, Depends(subscriptions)]


async def _parameters(request: Request, ctx: RouteContext) -> list[tuple[str, str]]:
    """The operation's input parameters: the query string's, then a POSTed Parameters resource's
    (primitive values only, as text)."""
    found = [(name, value) for name, value in request.query_params.multi_items() if not name.startswith("_")]
    if request.method == "POST" and request.headers.get("content-length", "0") != "0":
        body = await resource_body(request, ctx.rc)
        if body.get("resourceType") != "Parameters":
            raise InvalidRequest("the body of an operation is a Parameters resource")
        parameters = body.get("parameter") or []
        if not isinstance(parameters, list) or not all(
            isinstance(p, dict) and isinstance(p.get("name"), str) for p in parameters
        ):
            raise InvalidRequest("Parameters.parameter must be an array of named parameters", ["Parameters.parameter"])
        for parameter in cast(list[dict[str, Any]], parameters):
            values = [v for k, v in parameter.items() if k.startswith("value") and isinstance(v, str | int)]
            if values and not isinstance(values[0], bool):
                found.append((parameter["name"], str(values[0])))
    return found


def _number(parameters: list[tuple[str, str]], name: str) -> int | None:
    values = [value for key, value in parameters if key == name]
    if not values:
        return None
    if len(values) > 1 or not values[0].isascii() or not values[0].isdigit() or len(values[0]) > 18:
        raise InvalidRequest(f"{name} is one event number")
    return int(values[0])


def _answer(request: Request, body: dict[str, Any]) -> Response:
    fmt = negotiate(request.headers, request.query_params)
    return Response(dumps(body, fmt.pretty), 200, media_type=fmt.content_type)


async def subscription_status_type(request: Request, ctx: Ctx, subs: SubscriptionsDep) -> Response:
    """``[base]/Subscription/$status``: the status of the Subscriptions named by ``id`` (repeated or
    comma-separated), or of every one the caller may read; ``status`` filters."""
    parameters = await _parameters(request, ctx)
    ids = [part for name, value in parameters if name == "id" for part in value.split(",") if part]
    wanted = [part for name, value in parameters if name == "status" for part in value.split(",") if part]
    gate = ctx.fhir.read_gate(ctx.rc.caller)
    bundle = await operations.statuses(ctx.fhir, gate, subs.active.rules, ctx.rc.base_url, ids or None, wanted)
    return _answer(request, bundle)


async def subscription_status(request: Request, resource_id: str, ctx: Ctx, subs: SubscriptionsDep) -> Response:
    """``[base]/Subscription/[id]/$status``."""
    await _parameters(request, ctx)  # read and checked; at the instance level they change nothing
    gate = ctx.fhir.read_gate(ctx.rc.caller)
    bundle = await operations.statuses(ctx.fhir, gate, subs.active.rules, ctx.rc.base_url, [resource_id])
    return _answer(request, bundle)


async def subscription_events(request: Request, resource_id: str, ctx: Ctx, subs: SubscriptionsDep) -> Response:
    """``[base]/Subscription/[id]/$events?eventsSinceNumber=&eventsUntilNumber=&content=``."""
    parameters = await _parameters(request, ctx)
    contents = [value for name, value in parameters if name == "content"]
    gate = ctx.fhir.read_gate(ctx.rc.caller)
    bundle = await operations.events(
        ctx.fhir,
        gate,
        subs.active.rules,
        ctx.rc.base_url,
        resource_id,
        _number(parameters, "eventsSinceNumber"),
        _number(parameters, "eventsUntilNumber"),
        contents[0] if contents else None,
    )
    return _answer(request, bundle)


async def subscription_ws_token(request: Request, resource_id: str, ctx: Ctx, subs: SubscriptionsDep) -> Response:
    """``[base]/Subscription/[id]/$get-ws-binding-token``: a token to send as ``bind-with-token``."""
    await _parameters(request, ctx)
    gate = ctx.fhir.read_gate(ctx.rc.caller)
    token = await binding.issue_token(ctx.fhir, ctx.rc.caller.name, gate, resource_id, subs.websocket_url)
    return _answer(request, token)


async def subscription_topics(request: Request, ctx: Ctx, subs: SubscriptionsDep) -> Response:
    """``[base]/SubscriptionTopic``: every topic the server offers (R4B SubscriptionTopic resources),
    optionally only those of a ``url`` or a ``resource`` type."""
    unknown = sorted({name for name in request.query_params if name not in TOPIC_SEARCH and not name.startswith("_")})
    if unknown:
        raise InvalidRequest(f"topics are searched by {', '.join(TOPIC_SEARCH)}; not by {', '.join(unknown)[:80]}")
    urls = request.query_params.getlist("url")
    types = request.query_params.getlist("resource")
    base = ctx.rc.base_url
    entries = [
        {"fullUrl": f"{base}/SubscriptionTopic/{topic.name}", "resource": topic.definition, "search": {"mode": "match"}}
        for topic in subs.active.rules.topics
        if (not urls or topic.url in urls) and (not types or topic.resource_type in types)
    ]
    return _answer(request, {"resourceType": "Bundle", "type": "searchset", "total": len(entries), "entry": entries})


async def subscription_topic(request: Request, name: str, ctx: Ctx, subs: SubscriptionsDep) -> Response:
    """``[base]/SubscriptionTopic/[name]``: one topic."""
    topic = subs.active.rules.topics.by_name(name)
    if topic is None:
        raise NotFound(f"SubscriptionTopic/{name[:80]} is not known")
    return _answer(request, dict(topic.definition))
