"""The authorization request of SMART App Launch (hl7.org/fhir/smart-app-launch/app-launch.html).

``GET /smart/authorize`` takes ``response_type=code``, ``client_id``, ``redirect_uri``, ``scope``,
``state``, ``aud``, ``code_challenge`` with ``code_challenge_method=S256`` (PKCE is required of
every client; ``plain`` is refused) and, for an EHR launch, ``launch``. An unknown client or a
redirect URI that is not exactly a registered one is answered with an error page, never a redirect
(RFC 6749 section 4.1.2.1: the redirect URI cannot be trusted); every other problem is redirected
back as ``error=invalid_request`` with the ``state``.

Between the pages (login, patient picker, consent) the request travels as a **ticket**: a JWT signed
with the server's key holding the checked request and what each page added (the user, the patient),
valid ten minutes. Any server process can continue a request another one started, and a client
cannot alter what it asked for. Each ticket is bound to a random ``csrf`` value also set as an
HttpOnly cookie: a form posted from another site lacks the cookie and is refused.

A launch id from ``POST /smart/launch`` (EHR launch) is such a signed token as well, holding the
patient and encounter the EHR chose, usable by any registered client for ten minutes.
"""

from __future__ import annotations

import hmac
import secrets
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from joserfc import jwt
from joserfc.errors import JoseError

from app.smart.clients import Client
from app.smart.keys import SIGNING_ALGORITHM, SigningKeys
from app.smart.scopes import ScopeError, covered_by, parse_scope

TICKET_SECONDS = 600
LAUNCH_SECONDS = 600
_CHALLENGE_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


class PageError(Exception):
    """A request that gets an error page (400), never a redirect: unknown client, bad redirect URI,
    or a ticket that cannot be trusted."""


class RedirectError(Exception):
    """A request whose client and redirect URI are known good: the error goes back to the client
    (RFC 6749 section 4.1.2.1)."""

    def __init__(self, error: str, description: str) -> None:
        super().__init__(description)
        self.error = error
        self.description = description


@dataclass(frozen=True, slots=True)
class AuthorizationRequest:
    """A checked authorization request, and what the pages have added to it."""

    client_id: str
    redirect_uri: str
    scope: str  # as requested, verbatim
    state: str | None
    code_challenge: str
    nonce: str | None = None
    launch_patient: str | None = None  # from an EHR launch
    launch_encounter: str | None = None
    csrf: str = ""
    username: str | None = None  # after login
    fhir_user: str | None = None
    patient: str | None = None  # after the picker (or the user's own, or the launch's)
    encounter: str | None = None  # after the encounter picker
    encounter_asked: bool = False  # the encounter picker was shown (a patient without encounters skips it)
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def context_patient(self) -> str | None:
        return self.launch_patient or self.patient

    @property
    def scopes(self) -> list[str]:
        return self.scope.split()

    def wants(self, scope: str) -> bool:
        return scope in self.scopes

    def with_user(self, username: str, fhir_user: str) -> AuthorizationRequest:
        return replace(self, username=username, fhir_user=fhir_user)

    def with_patient(self, patient: str) -> AuthorizationRequest:
        return replace(self, patient=patient)

    def with_encounter(self, encounter: str | None) -> AuthorizationRequest:
        return replace(self, encounter=encounter, encounter_asked=True)


def redirect_to(uri: str, **params: str | None) -> str:
    """``uri`` with ``params`` added to its query (RFC 6749 section 4.1.2: keep the URI's own query)."""
    parts = urlsplit(uri)
    query = parse_qsl(parts.query, keep_blank_values=True)
    query += [(name, value) for name, value in params.items() if value is not None]
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query), parts.fragment))


def check_client(params: dict[str, str], client: Client | None) -> str:
    """The redirect URI, once the client is known and the URI is exactly one it registered."""
    if client is None:
        raise PageError("The application that sent you here is not registered with this server.")
    redirect_uri = params.get("redirect_uri")
    if not redirect_uri or redirect_uri not in client.redirect_uris:
        raise PageError("The application asked to return to an address it has not registered.")
    return redirect_uri


def check_request(
    params: dict[str, str], client: Client, redirect_uri: str, audience: str, launch: dict[str, Any] | None
) -> AuthorizationRequest:
    """Every other rule of the request; ``RedirectError`` for the first one broken."""
    if params.get("response_type") != "code":
        raise RedirectError("unsupported_response_type", "response_type must be code")
    if params.get("aud", "").rstrip("/") != audience.rstrip("/"):
        raise RedirectError("invalid_request", f"aud must be this FHIR server's base URL, {audience}")
    challenge = params.get("code_challenge", "")
    if params.get("code_challenge_method") != "S256":
        raise RedirectError("invalid_request", "PKCE is required: code_challenge_method must be S256")
    if not 43 <= len(challenge) <= 128 or not set(challenge) <= _CHALLENGE_CHARS:
        raise RedirectError("invalid_request", "code_challenge must be the base64url SHA-256 of the verifier")
    scope = params.get("scope", "").strip()
    if not scope:
        raise RedirectError("invalid_scope", "scope is required")
    for text in scope.split():
        try:
            parse_scope(text)
        except ScopeError as error:
            raise RedirectError("invalid_scope", str(error)) from None
    if not any(covered_by(text, client.scope) for text in scope.split()):
        raise RedirectError("invalid_scope", "none of the requested scopes is registered for this client")
    launch_patient = launch_encounter = None
    if params.get("launch") is not None:
        if launch is None:
            raise RedirectError("invalid_request", "the launch is unknown or has expired")
        launch_patient, launch_encounter = launch.get("patient"), launch.get("encounter")
    return AuthorizationRequest(
        client_id=client.client_id,
        redirect_uri=redirect_uri,
        scope=scope,
        state=params.get("state"),
        code_challenge=challenge,
        nonce=params.get("nonce"),
        launch_patient=launch_patient,
        launch_encounter=launch_encounter,
        csrf=secrets.token_urlsafe(24),
    )


def granted_scopes(request: AuthorizationRequest, client: Client) -> str:
    """The requested scopes the client is registered for, in the order asked."""
    return " ".join(text for text in dict.fromkeys(request.scopes) if covered_by(text, client.scope))


def needs_picker(request: AuthorizationRequest) -> bool:
    """The picker is for a practitioner who asked for a patient context the EHR did not give."""
    return (
        request.wants("launch/patient")
        and request.launch_patient is None
        and request.patient is None
        and (request.fhir_user or "").startswith("Practitioner/")
    )


def needs_encounter_picker(request: AuthorizationRequest) -> bool:
    """Standalone ``launch/encounter``: once the patient is known, the user picks one of that
    patient's encounters (the EHR's launch gives its own)."""
    return (
        request.wants("launch/encounter")
        and request.launch_encounter is None
        and not request.encounter_asked
        and request.context_patient is not None
        and not needs_picker(request)
    )


def sign_ticket(request: AuthorizationRequest, keys: SigningKeys) -> str:
    claims = {"use": "authorize", "exp": int(time.time()) + TICKET_SECONDS, "request": asdict(request)}
    return jwt.encode({"alg": SIGNING_ALGORITHM, "kid": keys.signer.kid}, claims, keys.signer)


def read_ticket(ticket: str, keys: SigningKeys, csrf_cookie: str | None) -> AuthorizationRequest:
    """The request a ticket carries, if this server signed it, it has not expired and the browser
    that posts it holds the ticket's csrf cookie."""
    try:
        claims = jwt.decode(ticket, keys.verifiers, algorithms=[SIGNING_ALGORITHM]).claims
    except (JoseError, ValueError):
        raise PageError("This sign-in request is not valid. Start again from the application.") from None
    if claims.get("use") != "authorize" or not isinstance(claims.get("request"), dict):
        raise PageError("This sign-in request is not valid. Start again from the application.")
    if not isinstance(claims.get("exp"), int) or claims["exp"] < time.time():
        raise PageError("This sign-in request has expired. Start again from the application.")
    request = AuthorizationRequest(**claims["request"])
    if not csrf_cookie or not hmac.compare_digest(csrf_cookie, request.csrf):
        raise PageError("This form was not sent from this server's page. Start again from the application.")
    return request


def sign_launch(keys: SigningKeys, patient: str, encounter: str | None) -> str:
    claims: dict[str, Any] = {"use": "launch", "exp": int(time.time()) + LAUNCH_SECONDS, "patient": patient}
    if encounter is not None:
        claims["encounter"] = encounter
    return jwt.encode({"alg": SIGNING_ALGORITHM, "kid": keys.signer.kid}, claims, keys.signer)


def read_launch(launch: str, keys: SigningKeys) -> dict[str, Any] | None:
    """The patient and encounter of a live launch id; None when unknown or expired."""
    try:
        claims = jwt.decode(launch, keys.verifiers, algorithms=[SIGNING_ALGORITHM]).claims
    except (JoseError, ValueError):
        return None
    if claims.get("use") != "launch" or not isinstance(claims.get("exp"), int) or claims["exp"] < time.time():
        return None
    return claims
