"""The SMART on FHIR authorization server's HTTP endpoints, beside the FHIR base.

``GET [base]/.well-known/smart-configuration`` (hl7.org/fhir/smart-app-launch/conformance.html)
says what works; the endpoints it names live under ``/smart`` next to the FHIR base
(``http://h:p/fhir`` -> ``http://h:p/smart/token``):

- ``GET /smart/jwks``: the public keys that verify this server's tokens;
- ``POST /smart/token``: the client credentials grant of SMART Backend Services
  (backend-services.html), for ``client_secret_basic`` and ``private_key_jwt`` clients;
- ``POST /smart/revoke``: RFC 7009 revocation;
- ``POST /smart/introspect``: RFC 7662 introspection, for confidential clients.

Token responses carry ``Cache-Control: no-store`` (RFC 6749 section 5.1); errors are RFC 6749
section 5.2 JSON, 401 for ``invalid_client``.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, cast
from urllib.parse import parse_qsl

import orjson
from starlette.requests import Request
from starlette.responses import Response

from app.api.auth import Authenticator, issuer
from app.config import Settings
from app.smart.clients import Client
from app.smart.codes import (
    REFRESH_DAYS,
    Grant,
    GrantRevoked,
    find_refresh_grant,
    grant_revoked,
    issue_refresh_token,
    redeem_code,
    redeem_refresh_token,
)
from app.smart.grants import (
    OAuthError,
    authenticate_client,
    backend_scope,
    credentials_of,
    invalid_client,
)
from app.smart.keys import SigningKeys
from app.smart.tokens import InvalidToken, epoch, issue_access_token, issue_id_token, revoke, verify_access_token

MAX_FORM_BYTES = 64 * 1024
GRANT_SECONDS = (REFRESH_DAYS + 1) * 86400  # the longest any token of a grant can live
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
SCOPES_SUPPORTED = [
    "openid",
    "fhirUser",
    "launch",
    "launch/patient",
    "launch/encounter",
    "offline_access",
    "online_access",
    "patient/*.cruds",
    "patient/*.rs",
    "user/*.cruds",
    "user/*.rs",
    "system/*.cruds",
    "system/*.rs",
    "patient/*.read",
    "user/*.read",
    "system/*.read",
    "patient/*.*",
    "user/*.*",
    "system/*.*",
]
CAPABILITIES = [
    "launch-ehr",
    "launch-standalone",
    "authorize-post",
    "client-public",
    "client-confidential-symmetric",
    "client-confidential-asymmetric",
    "sso-openid-connect",
    "context-ehr-patient",
    "context-ehr-encounter",
    "context-standalone-patient",
    "context-standalone-encounter",
    "permission-offline",
    "permission-online",
    "permission-patient",
    "permission-user",
    "permission-v1",
    "permission-v2",
]


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status, headers, media_type="application/json")


def _auth(request: Request) -> Authenticator:
    return cast(Authenticator, request.app.state.auth)


def smart_configuration_document(settings: Settings) -> dict[str, Any]:
    """What this server's authorization supports, and nothing it does not."""
    return {
        "issuer": issuer(settings),
        "jwks_uri": settings.smart_url("jwks"),
        "authorization_endpoint": settings.smart_url("authorize"),
        "token_endpoint": settings.smart_url("token"),
        "revocation_endpoint": settings.smart_url("revoke"),
        "introspection_endpoint": settings.smart_url("introspect"),
        "grant_types_supported": ["authorization_code", "client_credentials", "refresh_token"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "private_key_jwt"],
        "token_endpoint_auth_signing_alg_values_supported": ["RS384", "ES384"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "scopes_supported": SCOPES_SUPPORTED,
        "response_types_supported": ["code"],
        "code_challenge_methods_supported": ["S256"],
        "capabilities": CAPABILITIES,
    }


async def smart_configuration(request: Request) -> Response:
    return _json(smart_configuration_document(_auth(request).settings))


async def jwks(request: Request) -> Response:
    keys = _auth(request).verifier.keys
    return _json(keys.jwks() if keys is not None else {"keys": []}, headers={"Cache-Control": "max-age=60"})


async def _form(request: Request) -> dict[str, str]:
    """An ``application/x-www-form-urlencoded`` body; a parameter given twice is refused (RFC 6749 3.1)."""
    if request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/x-www-form-urlencoded":
        raise OAuthError("invalid_request", "the body must be application/x-www-form-urlencoded")
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        raise OAuthError("invalid_request", "the request body is too large")
    try:
        pairs = parse_qsl(body.decode(), keep_blank_values=True, max_num_fields=50)
    except (UnicodeDecodeError, ValueError):
        raise OAuthError("invalid_request", "the body is not a valid form") from None
    form: dict[str, str] = {}
    for name, value in pairs:
        if name in form:
            raise OAuthError("invalid_request", f"parameter '{name[:50]}' is given more than once")
        form[name] = value
    return form


async def token(request: Request) -> Response:
    """``POST /smart/token``: authorization_code, refresh_token and client_credentials grants."""
    auth = _auth(request)
    try:
        form = await _form(request)
        grant_type = form.get("grant_type")
        if grant_type not in GRANTS:
            shown = (grant_type or "")[:50]
            raise OAuthError("unsupported_grant_type", f"grant_type '{shown}' is not supported")
        credentials = credentials_of(form, request.headers.get("authorization"))
        client = await authenticate_client(auth.db, credentials, auth.settings.smart_url("token"), auth.jwks.fetch)
        keys = auth.verifier.keys
        if keys is None:
            raise OAuthError("temporarily_unavailable", "the signing keys are not loaded yet", 503)
        body = await GRANTS[grant_type](auth, keys, client, form)
    except GrantRevoked as error:  # refused here at once; other processes at their next poll
        auth.verifier.mark_revoked(error.grant_id, time.time() + GRANT_SECONDS)
        return _json(error.body(), error.status, NO_STORE)
    except OAuthError as error:
        return _json(error.body(), error.status, NO_STORE)
    return _json(body, 200, NO_STORE)


async def _client_credentials(
    auth: Authenticator, keys: SigningKeys, client: Client, form: dict[str, str]
) -> dict[str, Any]:
    """SMART Backend Services (backend-services.html): system/ scopes, no refresh token."""
    if client.client_type == "public":
        raise OAuthError("unauthorized_client", "a public client cannot use the client credentials grant")
    settings = auth.settings
    scope = backend_scope(form.get("scope"), client)
    lifetime = settings.auth_backend_token_seconds
    access, _ = issue_access_token(keys, issuer(settings), settings.public_base_url, client.client_id, scope, lifetime)
    return {"access_token": access, "token_type": "Bearer", "expires_in": lifetime, "scope": scope}


async def _authorization_code(
    auth: Authenticator, keys: SigningKeys, client: Client, form: dict[str, str]
) -> dict[str, Any]:
    """The code from the consent page, redeemed once with the PKCE verifier (RFC 7636)."""
    code = form.get("code")
    if not code:
        raise OAuthError("invalid_request", "code is required")
    lifetime = auth.settings.auth_token_seconds
    grant = await redeem_code(
        auth.db, code, client.client_id, form.get("redirect_uri"), form.get("code_verifier"), lifetime
    )
    return await _user_tokens(auth, keys, grant, grant.scope, include_id_token=True)


async def _refresh_token(
    auth: Authenticator, keys: SigningKeys, client: Client, form: dict[str, str]
) -> dict[str, Any]:
    """A new access token and a new refresh token (rotation); a narrower ``scope`` is honoured, a
    wider one refused (RFC 6749 section 6)."""
    presented = form.get("refresh_token")
    if not presented:
        raise OAuthError("invalid_request", "refresh_token is required")
    lifetime = auth.settings.auth_token_seconds
    grant = await redeem_refresh_token(auth.db, presented, client.client_id, lifetime, form.get("scope"))
    return await _user_tokens(auth, keys, grant, grant.scope, include_id_token=False)


async def _user_tokens(
    auth: Authenticator, keys: SigningKeys, grant: Grant, scope: str, include_id_token: bool
) -> dict[str, Any]:
    settings = auth.settings
    lifetime = settings.auth_token_seconds
    context = grant.context
    access, _ = issue_access_token(
        keys,
        issuer(settings),
        settings.public_base_url,
        grant.client_id,
        scope,
        lifetime,
        grant=grant.grant_id,
        patient=context.patient,
        encounter=context.encounter,
        fhir_user=context.fhir_user,
    )
    body: dict[str, Any] = {"access_token": access, "token_type": "Bearer", "expires_in": lifetime, "scope": scope}
    scopes = scope.split()
    if context.patient is not None:
        body["patient"] = context.patient
        body["need_patient_banner"] = context.encounter is None  # an EHR launch shows its own banner
    if context.encounter is not None:
        body["encounter"] = context.encounter
    identity = include_id_token and "openid" in scopes and ("fhirUser" in scopes or "profile" in scopes)
    if identity and context.fhir_user is not None and context.username is not None:
        body["id_token"] = issue_id_token(
            keys,
            issuer(settings),
            grant.client_id,
            context.username,
            f"{settings.public_base_url}/{context.fhir_user}",
            lifetime,
            context.nonce,
        )
    lasting = grant.lasting_scope.split()
    if "offline_access" in lasting or "online_access" in lasting:
        body["refresh_token"] = await issue_refresh_token(auth.db, grant, grant.lasting_scope)
    return body


GRANTS: dict[str, Callable[[Authenticator, SigningKeys, Client, dict[str, str]], Awaitable[dict[str, Any]]]] = {
    "authorization_code": _authorization_code,
    "refresh_token": _refresh_token,
    "client_credentials": _client_credentials,
}


async def revocation(request: Request) -> Response:
    """``POST /smart/revoke`` (RFC 7009): 200 whether or not the token was known; a client may revoke
    only its own tokens. Revoking a refresh token ends its grant, access tokens included (2.1)."""
    auth = _auth(request)
    settings = auth.settings
    try:
        form = await _form(request)
        credentials = credentials_of(form, request.headers.get("authorization"))
        client = await authenticate_client(auth.db, credentials, settings.smart_url("token"), auth.jwks.fetch)
        text = form.get("token")
        if not text:
            raise OAuthError("invalid_request", "token is required")
    except OAuthError as error:
        return _json(error.body(), error.status, NO_STORE)
    keys = auth.verifier.keys
    claims = None
    if keys is not None:
        try:  # an expired token needs no revoking: verify as of its own issue time
            claims = verify_access_token(text, keys, issuer(settings), settings.public_base_url, 0)
        except InvalidToken:
            claims = None
    if claims is not None and claims.client_id == client.client_id:
        await revoke(auth.db, claims.jti, datetime.fromtimestamp(claims.expires, UTC))
        auth.verifier.mark_revoked(claims.jti, claims.expires)
    elif claims is None:
        refresh = await find_refresh_grant(auth.db, text)
        if refresh is not None and refresh[1] == client.client_id:
            grant_id, _, expires = refresh
            await grant_revoked(auth.db, grant_id)
            await revoke(auth.db, grant_id, expires)
            auth.verifier.mark_revoked(grant_id, epoch(expires) + settings.auth_token_seconds)
    return Response(b"", 200, NO_STORE)


async def introspection(request: Request) -> Response:
    """``POST /smart/introspect`` (RFC 7662, SMART token-introspection.html): for confidential
    clients (HTTP Basic or a client assertion); ``{"active": false}`` for anything not live."""
    auth = _auth(request)
    settings = auth.settings
    try:
        form = await _form(request)
        credentials = credentials_of(form, request.headers.get("authorization"))
        if credentials.secret is None and credentials.assertion is None:
            raise invalid_client("introspection needs a confidential client's credentials")
        await authenticate_client(auth.db, credentials, settings.smart_url("token"), auth.jwks.fetch)
        text = form.get("token")
        if not text:
            raise OAuthError("invalid_request", "token is required")
    except OAuthError as error:
        return _json(error.body(), error.status, NO_STORE)
    try:
        claims = auth.verifier.verify(text)
    except InvalidToken:
        return _json({"active": False}, 200, NO_STORE)
    body: dict[str, Any] = {
        "active": True,
        "scope": claims.scope,
        "client_id": claims.client_id,
        "token_type": "Bearer",
        "exp": claims.expires,
        "iat": claims.issued,
        "iss": issuer(settings),
        "aud": settings.public_base_url,
        "sub": claims.fhir_user or claims.client_id,
    }
    for name, value in (("patient", claims.patient), ("encounter", claims.encounter), ("fhirUser", claims.fhir_user)):
        if value is not None:
            body[name] = value
    return _json(body, 200, NO_STORE)
