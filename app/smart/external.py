"""Access tokens of an external authorization server the deployment trusts (an EHR's own).

``FHIR_AUTH_TRUSTED_ISSUERS`` lists each trusted issuer with the URL of its JWKS and the audience
its tokens must name (this server's FHIR base, usually). Such a token is a JWT signed RS256, RS384,
ES256 or ES384 with a key of that JWKS (fetched with the app's HTTP client, cached, fetched again
for an unknown ``kid``); its ``scope`` (a space-separated string, or a ``scp`` list) and its
``patient`` and ``fhirUser`` claims are enforced exactly as this server's own tokens are. The
client is its ``client_id`` (or ``azp``, or ``sub``). Revocation of such tokens is the issuer's
business: they live until ``exp``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from joserfc.jws import extract_compact

from app.smart.grants import JwksFetcher
from app.smart.tokens import AccessClaims, InvalidToken

EXTERNAL_ALGORITHMS = ["RS256", "RS384", "ES256", "ES384"]


@dataclass(frozen=True, slots=True)
class TrustedIssuer:
    issuer: str
    jwks_url: str
    audience: str


def unverified_issuer(token: str) -> str | None:
    """The ``iss`` a token claims, before anything is verified (to choose the keys to verify it with)."""
    try:
        claims = orjson.loads(extract_compact(token.encode()).payload)
    except (JoseError, ValueError, orjson.JSONDecodeError):
        return None
    issuer = claims.get("iss") if isinstance(claims, dict) else None
    return issuer if isinstance(issuer, str) else None


async def _keys(trusted: TrustedIssuer, fetch_jwks: JwksFetcher, kid: Any) -> KeySet:
    for refresh in (False, True):
        try:
            jwks = await fetch_jwks(trusted.jwks_url, refresh)
            usable = [key for key in jwks.get("keys", []) if isinstance(key, dict) and key.get("kty") in ("RSA", "EC")]
            keys = KeySet.import_key_set({"keys": usable})
        except Exception:  # the issuer's JWKS URL is unreachable or holds nothing usable
            raise InvalidToken("the issuer's keys could not be fetched") from None
        if any(key.kid == kid for key in keys.keys) or (kid is None and keys.keys):
            return keys
    raise InvalidToken("no key of the issuer has the token's kid")


async def verify_external(token: str, trusted: TrustedIssuer, fetch_jwks: JwksFetcher, now: float) -> AccessClaims:
    try:
        header = extract_compact(token.encode()).headers()
    except (JoseError, ValueError):
        raise InvalidToken("the token is malformed") from None
    if header.get("alg") not in EXTERNAL_ALGORITHMS:
        raise InvalidToken(f"the token must be signed with one of {', '.join(EXTERNAL_ALGORITHMS)}")
    keys = await _keys(trusted, fetch_jwks, header.get("kid"))
    try:
        claims = jwt.decode(token, keys, algorithms=EXTERNAL_ALGORITHMS).claims
    except (JoseError, ValueError):
        raise InvalidToken("the token's signature does not verify") from None
    if claims.get("iss") != trusted.issuer:
        raise InvalidToken("the token was issued by another server")
    audience = claims.get("aud")
    if audience != trusted.audience and not (isinstance(audience, list) and trusted.audience in audience):
        raise InvalidToken("the token is meant for another server")
    expires = claims.get("exp")
    if not isinstance(expires, int) or isinstance(expires, bool) or expires <= now:
        raise InvalidToken("the token has expired or has no exp")
    scope = claims.get("scope")
    if scope is None and isinstance(claims.get("scp"), list):
        scope = " ".join(str(item) for item in claims["scp"])
    client = claims.get("client_id") or claims.get("azp") or claims.get("sub")
    if not isinstance(scope, str) or not isinstance(client, str) or not client:
        raise InvalidToken("the token has no scope or no client")
    token_id = claims.get("jti") if isinstance(claims.get("jti"), str) else f"{trusted.issuer}#{expires}#{client}"
    stated = claims.get("iat")
    issued = stated if isinstance(stated, int) else int(now)
    patient, fhir_user = claims.get("patient"), claims.get("fhirUser")
    return AccessClaims(
        client_id=f"{client}@{trusted.issuer}",
        scope=scope,
        jti=str(token_id),
        grant=str(token_id),
        expires=expires,
        issued=issued,
        patient=patient if isinstance(patient, str) else None,
        encounter=claims.get("encounter") if isinstance(claims.get("encounter"), str) else None,
        fhir_user=fhir_user if isinstance(fhir_user, str) else None,
    )
