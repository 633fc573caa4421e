"""App factory: settings -> database, validator, routes, CapabilityStatement."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import replace
from importlib import resources
from typing import Any

from fastapi import Depends, FastAPI

from app.api import authorize_routes, smart_routes, subscription_routes, websocket_routes
from app.api.async_requests import ASYNC_PATH, cancel, job_status
from app.api.auth import Authenticator
from app.api.cors import CrossOriginMiddleware
from app.api.deps import caller, request_limits
from app.api.endpoints import ENDPOINTS
from app.api.errors import install_error_handlers
from app.api.fhir_route import FhirRoute
from app.api.middleware import MAX_URL_BYTES, RequestLogMiddleware
from app.api.server_routes import CapabilityCache, health, metadata, ready
from app.config import Settings
from app.heap import freeze_startup_heap
from app.interactions.catalog import INTERACTIONS, OPERATION_METHODS, UNSUPPORTED_OPERATIONS
from app.interactions.context import ContextHolder, FhirContext, utc_now
from app.interactions.jobs import JobRunner
from app.interactions.reindex_job import REINDEX, REINDEX_JOB
from app.interactions.search_parameters import check_search_parameter, refresh_if_changed, reload_search_parameters
from app.search import bounds
from app.search.extraction import Extractor
from app.search.registry import SearchRegistry, load_registry
from app.smart.throttle import LoginThrottle
from app.storage.broadcast import Broadcast
from app.storage.database import Database
from app.storage.writes import ResourceWriter
from app.subscriptions.active import ActiveSubscriptions
from app.subscriptions.definition import SubscriptionRules, accept_subscription
from app.subscriptions.dispatcher import DeliverySettings, Dispatcher
from app.subscriptions.endpoints import EndpointPolicy
from app.subscriptions.outbox import SubscriptionOutbox
from app.subscriptions.sender import AiohttpSender
from app.subscriptions.service import Subscriptions
from app.subscriptions.topics import load_topics
from app.subscriptions.websocket import WebSocketHub
from app.validation.bindings import BindingTable
from app.validation.json_rules import JsonLimits
from app.validation.structure import has_model
from app.validation.validator import ResourceValidator
from capability.statement import build_capability_statement, render

FHIR_PREFIX = "/fhir"
LOG = logging.getLogger("fhir.server")
READ_METHODS = ["GET", "HEAD"]
SUBSCRIPTION_EVENTS_CHANNEL = "fhir_subscription_events"
# a worker whose write stored events wakes the delivery processes on a channel of their own: the workers
# (which listen for Subscription changes and websocket events) are not woken by every notifying write
SUBSCRIPTION_WAKE_CHANNEL = "fhir_subscription_wake"
WAKE = "wake"
WEBSOCKET_PATH = "/websocket"  # beside the FHIR types: [base]/websocket


def served_resource_types() -> frozenset[str]:
    """The R4 resource types that the fhir.resources R4B models can validate: those with a model module.
    The modules are found, not imported: a model is imported on first use (``app.heap``)."""
    r4_types = json.loads(resources.files("capability").joinpath("resource_types.json").read_bytes())
    return frozenset(name for name in r4_types if has_model(name))


def build_context(
    database: Database,
    types: frozenset[str] | None = None,
    limits: JsonLimits | None = None,
    more_rules: Mapping[str, Callable[[dict[str, Any]], None]] | None = None,
) -> FhirContext:
    """Everything the interactions need, built once: validator, search registry, extractor.
    ``more_rules``: write-time rules per type beyond the SearchParameter one."""
    types = types if types is not None else served_resource_types()
    registry = load_registry(types)
    rules: dict[str, Callable[[dict[str, Any]], None]] = {
        "SearchParameter": lambda body: check_search_parameter(body, types, registry),
        **(more_rules or {}),
    }
    return FhirContext(
        db=database,
        validator=ResourceValidator(BindingTable.load(), rules, limits),
        resource_types=types,
        registry=registry,
        extractor=Extractor(registry),
        writer=ResourceWriter(database),
        base_registry=registry,
    )


async def watch_search_parameters(holder: ContextHolder, interval: float) -> None:
    """Pick up SearchParameters stored through other worker processes."""
    while True:
        await asyncio.sleep(interval)
        try:
            await refresh_if_changed(holder)
        except Exception:  # a database hiccup must not end the watcher
            logging.getLogger("fhir.search_parameters").exception("SearchParameter refresh failed")


def websocket_url(base_url: str) -> str:
    """``ws(s)://host/fhir/websocket`` for the public base URL."""
    scheme, _, rest = base_url.partition("://")
    return f"{'wss' if scheme == 'https' else 'ws'}://{rest}{WEBSOCKET_PATH}"


def install_subscriptions(holder: ContextHolder, rules: SubscriptionRules, settings: Settings) -> Subscriptions:
    """The outbox hook on every write of the current context, and the dispatcher that delivers it."""
    policy = rules.policy
    active = ActiveSubscriptions(holder, rules)
    delivery = DeliverySettings(
        retry_hours=settings.subscription_retry_hours,
        timeout_seconds=settings.subscription_timeout_seconds,
        poll_seconds=settings.subscription_poll_seconds,
        lease_seconds=max(settings.subscription_lease_seconds, 2 * settings.subscription_timeout_seconds),
        attempts_keep_days=settings.subscription_attempts_keep_days,
        base_url=settings.public_base_url,
    )
    sender = AiohttpSender()
    broadcast = Broadcast(holder.current.db, SUBSCRIPTION_EVENTS_CHANNEL)
    broadcast.listen(active.on_message)
    hub = WebSocketHub(holder, broadcast, rules, settings.public_base_url)
    dispatcher = Dispatcher(holder, active, policy, sender, delivery, hub)
    wakes = Broadcast(holder.current.db, SUBSCRIPTION_WAKE_CHANNEL)  # heard only where the dispatcher runs
    wakes.listen(lambda _: dispatcher.wake())

    def wake() -> None:  # after a write that stored events committed: this process's dispatcher, or the others'
        if settings.delivery_process:
            wakes.announce(WAKE)
        else:
            dispatcher.wake()

    # with a delivery process, a write stored by one statement wakes it by a NOTIFY of that statement's
    notice = wakes.statement_notice(WAKE) if settings.delivery_process else None
    outbox = SubscriptionOutbox(holder, active, wake, broadcast.announce, notice)
    holder.current = replace(holder.current, writer=holder.current.writer.with_hooks(outbox))
    return Subscriptions(active, dispatcher, hub, sender, websocket_url(settings.public_base_url), wakes)


def server_limits(settings: Settings) -> dict[str, int]:
    """Every limit a client can run into, as published in the CapabilityStatement and the README."""
    return {
        "maxBodyBytes": settings.max_body_bytes,
        "maxBundleEntries": settings.max_bundle_entries,
        "maxBundleResponseResources": settings.max_bundle_response_resources,
        "maxArrayItems": settings.max_array_items,
        "maxJsonDepth": settings.max_json_depth,
        "maxPageSize": settings.max_page_size,
        **bounds.DOCUMENTED,
        "maxUrlBytes": MAX_URL_BYTES,
        "dbStatementTimeoutSeconds": round(settings.db_statement_timeout),
    }


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    logging.basicConfig(level=settings.log_level.upper(), format="%(message)s")
    database = Database.from_url(
        settings.database_url,
        settings.db_pool_size,
        sqlite_inline=settings.workers == 1,
        statement_timeout=settings.db_statement_timeout,
    )
    types = served_resource_types()
    policy = EndpointPolicy(settings.subscription_allow_http, frozenset(settings.subscription_allowed_hosts))
    topics = load_topics()
    rules = SubscriptionRules(types, policy, topics)

    def subscription_rule(body: dict[str, Any]) -> None:  # with the registry in use when it is written
        accept_subscription(body, holder.current.registry, rules)

    ctx = build_context(
        database,
        types,
        JsonLimits(settings.max_array_items, settings.max_json_depth, settings.max_body_bytes),
        {"Subscription": subscription_rule},
    )
    holder = ContextHolder(ctx)
    subscriptions = install_subscriptions(holder, rules, settings)
    jobs = JobRunner(holder, {REINDEX: REINDEX_JOB})
    auth = Authenticator.build(settings, database)
    if not settings.auth_enforced:
        LOG.warning(
            "WARNING: FHIR_AUTH=off: every FHIR interaction is open to anyone who can reach %s, without a token. "
            "Use this only for local experiments with data that is not real.",
            settings.public_base_url,
        )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await database.open_pool()
        await reload_search_parameters(holder)
        watcher = asyncio.create_task(watch_search_parameters(holder, settings.search_parameter_refresh_seconds))
        await subscriptions.start(deliver=not settings.delivery_process)  # else: fhir-server deliver
        await auth.start()  # a signing key on first start; keys and revocations loaded
        auth_poller = asyncio.create_task(auth.poll())
        await jobs.start()  # resume jobs whose process stopped
        freeze_startup_heap()
        yield
        watcher.cancel()
        auth_poller.cancel()
        await subscriptions.close()  # undelivered events stay in the outbox
        await jobs.close()  # their jobs stay resumable
        await auth.close()
        await database.dispose()

    app = FastAPI(title="Care plan repository", lifespan=lifespan, openapi_url=None, docs_url=None, redoc_url=None)
    app.state.settings = settings
    app.state.request_limits = request_limits(settings)
    app.state.fhir = holder
    app.state.jobs = jobs
    app.state.subscriptions = subscriptions
    app.state.auth = auth
    app.state.login_throttle = LoginThrottle()
    started = utc_now()

    limits = server_limits(settings)
    oauth_uris = None
    if settings.auth_enforced:
        oauth_uris = {name: settings.smart_url(name) for name in ("authorize", "token", "revoke", "introspect")}

    def capability_bytes(registry: SearchRegistry) -> bytes:
        statement = build_capability_statement(
            types,
            INTERACTIONS,
            settings.public_base_url,
            started,
            registry,
            limits=limits,
            oauth_uris=oauth_uris,
            websocket_url=websocket_url(settings.public_base_url),
            topic_urls=[topic.url for topic in topics],
        )
        return render(statement)

    # rendered at the first /metadata (about 75 ms), and again when the registry changes
    app.state.capability = CapabilityCache(capability_bytes)
    app.add_middleware(RequestLogMiddleware)
    # Browser apps on other origins (a SMART app in an EHR's frame) call the API, the discovery
    # document and the token endpoint (hl7.org/fhir/smart-app-launch/app-launch.html): preflights are
    # answered before authentication, which a preflight never carries.
    app.add_middleware(
        CrossOriginMiddleware,
        allow_origins=["*"],
        allow_methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"],
        allow_headers=[
            "Authorization",
            "Content-Type",
            "Accept",
            "Prefer",
            "If-Match",
            "If-None-Match",
            "If-None-Exist",
            "If-Modified-Since",
            "X-Request-Id",
        ],
        expose_headers=["Location", "Content-Location", "ETag", "Last-Modified", "WWW-Authenticate", "X-Request-Id"],
        max_age=600,
    )
    install_error_handlers(app)
    app.add_api_route("/health", health, methods=READ_METHODS, include_in_schema=False)
    app.add_api_route("/health/ready", ready, methods=READ_METHODS, include_in_schema=False)
    app.add_api_route(f"{FHIR_PREFIX}/metadata", metadata, methods=READ_METHODS, include_in_schema=False)
    app.add_api_route(
        f"{FHIR_PREFIX}/.well-known/smart-configuration",
        smart_routes.smart_configuration,
        methods=READ_METHODS,
        include_in_schema=False,
    )
    # async.html polling locations: before the /{resource_type} routes, and not FHIR interactions
    app.add_api_route(
        f"{FHIR_PREFIX}{ASYNC_PATH}/{{job_id}}", job_status, methods=READ_METHODS, include_in_schema=False
    )
    app.add_api_route(f"{FHIR_PREFIX}{ASYNC_PATH}/{{job_id}}", cancel, methods=["DELETE"], include_in_schema=False)
    # the topics of topic-based Subscriptions: not an R4 type, so before the [type] routes
    app.add_api_route(
        f"{FHIR_PREFIX}/SubscriptionTopic",
        subscription_routes.subscription_topics,
        methods=READ_METHODS,
        include_in_schema=False,
    )
    app.add_api_route(
        f"{FHIR_PREFIX}/SubscriptionTopic/{{name}}",
        subscription_routes.subscription_topic,
        methods=READ_METHODS,
        include_in_schema=False,
    )
    registered = set()
    for route in INTERACTIONS:  # transaction and batch share POST [base]
        if (route.method, route.path) not in registered:
            registered.add((route.method, route.path))
            methods = READ_METHODS if route.method == "GET" else [route.method]  # HEAD wherever GET works
            endpoint = ENDPOINTS[route.endpoint]
            app.router.add_api_route(
                FHIR_PREFIX + route.path,
                endpoint,
                methods=methods,
                include_in_schema=False,
                route_class_override=FhirRoute,
            )
    for path, name in UNSUPPORTED_OPERATIONS:  # authenticated too: without a token nothing is answered
        app.add_api_route(
            FHIR_PREFIX + path,
            ENDPOINTS[name],
            methods=OPERATION_METHODS,
            include_in_schema=False,
            dependencies=[Depends(caller)],
        )
    app.add_api_websocket_route(FHIR_PREFIX + WEBSOCKET_PATH, websocket_routes.subscription_websocket)
    add_authorization_routes(app)
    return app


def add_authorization_routes(app: FastAPI) -> None:
    """The authorization server's endpoints under ``/smart``, mounted after the FHIR routes: routes
    are matched in order, and every FHIR request would otherwise try each of these first."""
    app.add_api_route("/smart/jwks", smart_routes.jwks, methods=READ_METHODS, include_in_schema=False)
    app.add_api_route(
        "/smart/authorize", authorize_routes.authorize, methods=[*READ_METHODS, "POST"], include_in_schema=False
    )
    app.add_api_route("/smart/authorize/login", authorize_routes.login, methods=["POST"], include_in_schema=False)
    app.add_api_route(
        "/smart/authorize/patient", authorize_routes.pick_patient, methods=["POST"], include_in_schema=False
    )
    app.add_api_route(
        "/smart/authorize/encounter", authorize_routes.pick_encounter, methods=["POST"], include_in_schema=False
    )
    app.add_api_route("/smart/authorize/consent", authorize_routes.consent, methods=["POST"], include_in_schema=False)
    app.add_api_route("/smart/launch", authorize_routes.launch, methods=["POST"], include_in_schema=False)
    app.add_api_route("/smart/token", smart_routes.token, methods=["POST"], include_in_schema=False)
    app.add_api_route("/smart/revoke", smart_routes.revocation, methods=["POST"], include_in_schema=False)
    app.add_api_route("/smart/introspect", smart_routes.introspection, methods=["POST"], include_in_schema=False)
