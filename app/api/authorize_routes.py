"""The authorization endpoint's pages and the EHR launch endpoint (SMART App Launch 2.x).

``GET /smart/authorize`` checks the request (``app.smart.authorize``) and shows the login page;
``POST /smart/authorize/login`` signs the user in; ``POST /smart/authorize/patient`` takes the
picked patient; ``POST /smart/authorize/consent`` issues the code (``Allow``) or
``error=access_denied`` (``Deny``). The pages are plain HTML forms, server-rendered with Jinja2
(autoescaped), without scripts or external assets, every control labelled.

``POST /smart/launch`` (beside the FHIR base, as ``/smart/token`` is) is called by an EHR with a
backend token holding a ``system/`` scope: ``{"patient": "Patient/ID", "encounter": "Encounter/ID"}``
gives ``{"launch": "<id>"}`` for the app's authorization request.
"""

from __future__ import annotations

import asyncio
from importlib import resources
from typing import Any, cast
from urllib.parse import parse_qsl

import orjson
from jinja2 import Environment, FunctionLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from app.api.auth import Authenticator
from app.errors import Forbidden, InvalidRequest
from app.interactions.context import ContextHolder
from app.smart.authorize import (
    AuthorizationRequest,
    PageError,
    RedirectError,
    check_client,
    check_request,
    granted_scopes,
    needs_encounter_picker,
    needs_picker,
    read_launch,
    read_ticket,
    redirect_to,
    sign_launch,
    sign_ticket,
)
from app.smart.clients import Client, find_client, find_user, verify_secret
from app.smart.codes import GrantContext, issue_code
from app.smart.directory import (
    EncounterChoice,
    encounter_choices,
    patient_choices,
    related_patient,
    resource_exists,
)
from app.smart.keys import SigningKeys
from app.smart.scopes import covered_by
from app.smart.throttle import LoginThrottle

CSRF_COOKIE = "smart_csrf"
MAX_FORM_BYTES = 64 * 1024
PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
    # no form-action: browsers apply it to the redirect that follows the consent form, to the app
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
    "Referrer-Policy": "no-referrer",
}


def _template_source(name: str) -> str:
    return resources.files("app.smart").joinpath("templates").joinpath(name).read_text()


PAGES = Environment(loader=FunctionLoader(_template_source), autoescape=select_autoescape(default=True))


def _auth(request: Request) -> Authenticator:
    return cast(Authenticator, request.app.state.auth)


def _keys(request: Request) -> SigningKeys:
    keys = _auth(request).verifier.keys
    if keys is None:
        raise PageError("The server is starting; try again in a moment.")
    return keys


def page(template: str, status: int = 200, **values: Any) -> Response:
    body = PAGES.get_template(template).render(**values)
    return Response(body, status, PAGE_HEADERS, media_type="text/html")


def error_page(message: str, status: int = 400) -> Response:
    return page("error.html", status, title="Cannot continue", message=message)


def _secure(request: Request) -> bool:
    return _auth(request).settings.public_base_url.startswith("https://")


async def _form(request: Request) -> dict[str, str]:
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        raise PageError("The form is too large.")
    return dict(parse_qsl(body.decode(errors="replace"), keep_blank_values=True, max_num_fields=20))


def _login_page(request: Request, auth: AuthorizationRequest, keys: SigningKeys, error: str | None = None) -> Response:
    status = 200 if error is None else 401
    return page(
        "login.html",
        status,
        title="Sign in",
        client_id=auth.client_id,
        ticket=sign_ticket(auth, keys),
        action="/smart/authorize/login",
        error=error,
        username=auth.username or "",
    )


async def authorize(request: Request) -> Response:
    """``GET /smart/authorize`` (or ``POST`` with the same parameters as a form: SMART's
    ``authorize-post``): check the request, then the login page (with the csrf cookie)."""
    auth = _auth(request)
    try:
        params = dict(request.query_params) if request.method != "POST" else await _form(request)
        keys = _keys(request)
        async with auth.db.read() as conn:
            client = await find_client(conn, params.get("client_id", ""))
        redirect_uri = check_client(params, client)
    except PageError as error:
        return error_page(str(error))
    assert client is not None
    try:
        launch = read_launch(params["launch"], keys) if params.get("launch") is not None else None
        checked = check_request(params, client, redirect_uri, auth.settings.public_base_url, launch)
    except RedirectError as error:
        target = redirect_to(redirect_uri, error=error.error, error_description=error.description,
                             state=params.get("state"))  # fmt: skip
        return RedirectResponse(target, 302)
    response = _login_page(request, checked, keys)
    response.set_cookie(
        CSRF_COOKIE, checked.csrf, max_age=600, httponly=True, samesite="lax", secure=_secure(request), path="/smart"
    )
    return response


async def _continue(request: Request) -> tuple[AuthorizationRequest, dict[str, str], SigningKeys]:
    form = await _form(request)
    keys = _keys(request)
    return read_ticket(form.get("ticket", ""), keys, request.cookies.get(CSRF_COOKIE)), form, keys


async def login(request: Request) -> Response:
    """``POST /smart/authorize/login``."""
    auth = _auth(request)
    throttle: LoginThrottle = request.app.state.login_throttle
    try:
        pending, form, keys = await _continue(request)
    except PageError as error:
        return error_page(str(error))
    username = form.get("username", "")
    address = request.client.host if request.client else "unknown"
    if not throttle.allowed(username, address):
        return error_page("Too many failed sign-ins. Wait a few minutes and try again.", 429)
    async with auth.db.read() as conn:
        user = await find_user(conn, username)
    password = form.get("password", "")
    ok = user is not None and await asyncio.to_thread(verify_secret, user.password_hash, password)
    if not ok or user is None:
        throttle.failed(username, address)
        return _login_page(request, pending, keys, "The username or password is not right.")
    throttle.succeeded(username, address)
    pending = pending.with_user(user.username, user.fhir_user)
    if pending.fhir_user and pending.fhir_user.startswith("Patient/"):
        pending = pending.with_patient(pending.fhir_user.split("/", 1)[1])  # a patient's own record
    elif pending.fhir_user and pending.fhir_user.startswith("RelatedPerson/") and pending.wants("launch/patient"):
        async with auth.db.read() as conn:
            related = await related_patient(conn, pending.fhir_user.split("/", 1)[1])
        if related is not None:
            pending = pending.with_patient(related)
    return await _next_page(request, pending, keys)


async def _encounters(request: Request, patient: str) -> list[EncounterChoice]:
    registry = cast(ContextHolder, request.app.state.fhir).current.registry
    subject = registry.get("Encounter", "subject")
    if subject is None:
        return []
    async with _auth(request).db.read() as conn:
        return await encounter_choices(conn, patient, subject.hash, 100)


async def _next_page(request: Request, pending: AuthorizationRequest, keys: SigningKeys) -> Response:
    if needs_encounter_picker(pending):
        patient = pending.context_patient
        assert patient is not None
        choices = await _encounters(request, patient)
        if not choices:  # nothing to pick: the token simply has no encounter
            pending = pending.with_encounter(None)
        else:
            return _step("encounter", "Choose an encounter", pending, keys, encounters=choices,
                         patient_label=f"Patient/{patient}")  # fmt: skip
    if needs_picker(pending):
        async with _auth(request).db.read() as conn:
            patients = await patient_choices(conn, 100)
        return _step("patient", "Choose a patient", pending, keys, patients=patients, error=None)
    client = await _client(request, pending.client_id)
    return _step(
        "consent",
        "Allow access?",
        pending,
        keys,
        scopes=pending.scopes,
        not_registered={text for text in pending.scopes if not covered_by(text, client.scope)},
        patient_label=pending.patient or pending.launch_patient,
    )


STEP_TEMPLATES = {"encounter": "encounter.html", "patient": "picker.html", "consent": "consent.html"}


def _step(step: str, title: str, pending: AuthorizationRequest, keys: SigningKeys, **values: Any) -> Response:
    """The page of one step, posting the signed ticket to ``/smart/authorize/<step>``."""
    return page(
        STEP_TEMPLATES[step],
        title=title,
        client_id=pending.client_id,
        ticket=sign_ticket(pending, keys),
        action=f"/smart/authorize/{step}",
        **values,
    )


async def _client(request: Request, client_id: str) -> Client:
    async with _auth(request).db.read() as conn:
        client = await find_client(conn, client_id)
    if client is None:
        raise PageError("The application is no longer registered with this server.")
    return client


async def pick_patient(request: Request) -> Response:
    """``POST /smart/authorize/patient``."""
    try:
        pending, form, keys = await _continue(request)
        if pending.username is None or not needs_picker(pending):
            raise PageError("This step is not part of this sign-in. Start again from the application.")
        patient = form.get("patient", "")
        async with _auth(request).db.read() as conn:
            known = bool(patient) and await resource_exists(conn, "Patient", patient)
        if not known:
            raise PageError("Choose one of the listed patients.")
        return await _next_page(request, pending.with_patient(patient), keys)
    except PageError as error:
        return error_page(str(error))


async def pick_encounter(request: Request) -> Response:
    """``POST /smart/authorize/encounter``: one of the patient's encounters (``launch/encounter``)."""
    try:
        pending, form, keys = await _continue(request)
        if pending.username is None or not needs_encounter_picker(pending):
            raise PageError("This step is not part of this sign-in. Start again from the application.")
        patient = pending.context_patient
        assert patient is not None
        chosen = form.get("encounter", "")
        if chosen not in {choice.id for choice in await _encounters(request, patient)}:
            raise PageError("Choose one of the listed encounters.")
        return await _next_page(request, pending.with_encounter(chosen), keys)
    except PageError as error:
        return error_page(str(error))


async def consent(request: Request) -> Response:
    """``POST /smart/authorize/consent``: ``Allow`` redirects with a code, ``Deny`` with access_denied."""
    try:
        pending, form, _ = await _continue(request)
        if pending.username is None or needs_picker(pending) or needs_encounter_picker(pending):
            raise PageError("This step is not part of this sign-in. Start again from the application.")
        client = await _client(request, pending.client_id)
    except PageError as error:
        return error_page(str(error))
    if form.get("decision") != "allow":
        target = redirect_to(pending.redirect_uri, error="access_denied", state=pending.state)
        return _finished(RedirectResponse(target, 302))
    scope = granted_scopes(pending, client)
    patient = pending.launch_patient or pending.patient
    context = GrantContext(
        patient=patient,
        encounter=pending.launch_encounter or pending.encounter,
        fhir_user=pending.fhir_user,
        username=pending.username,
        nonce=pending.nonce,
    )
    code = await issue_code(_auth(request).db, client.client_id, pending.redirect_uri, scope,
                            pending.code_challenge, context)  # fmt: skip
    return _finished(RedirectResponse(redirect_to(pending.redirect_uri, code=code, state=pending.state), 302))


def _finished(response: Response) -> Response:
    response.delete_cookie(CSRF_COOKIE, path="/smart")
    return response


async def launch(request: Request) -> Response:
    """``POST /smart/launch``: a launch id for the patient (and encounter) an EHR has open."""
    caller = await _auth(request).caller(request.headers.get("authorization"))
    if caller.permissions is not None and not caller.permissions.has_system_scopes:
        raise Forbidden("creating a launch needs a token with system/ scopes")
    try:
        body = orjson.loads(await request.body())
    except orjson.JSONDecodeError:
        raise InvalidRequest('the body must be JSON: {"patient": "Patient/ID", "encounter": "Encounter/ID"}') from None
    if not isinstance(body, dict):
        raise InvalidRequest("the body must be a JSON object")
    patient = _reference(body.get("patient"), "Patient", "patient")
    encounter = _reference(body.get("encounter"), "Encounter", "encounter") if body.get("encounter") else None
    async with _auth(request).db.read() as conn:
        if not await resource_exists(conn, "Patient", patient):
            raise InvalidRequest(f"Patient/{patient} is not known", ["patient"])
        if encounter is not None and not await resource_exists(conn, "Encounter", encounter):
            raise InvalidRequest(f"Encounter/{encounter} is not known", ["encounter"])
    keys = _auth(request).verifier.keys
    assert keys is not None
    return Response(orjson.dumps({"launch": sign_launch(keys, patient, encounter)}), 201, media_type="application/json")


def _reference(value: object, resource_type: str, name: str) -> str:
    if not isinstance(value, str) or not value.startswith(f"{resource_type}/") or len(value) > 100:
        raise InvalidRequest(f"'{name}' must be a reference '{resource_type}/ID'", [name])
    return value.split("/", 1)[1]
