"""Client JWKS fetched from their registered URL (SMART Backend Services ``jwks_url``), cached.

The HTTP client comes from the app's lifespan, never a module global; tests pass an
``httpx.MockTransport`` or a local server. A JWKS is kept for ``ttl`` seconds, and fetched again at
once when an assertion names a ``kid`` the cached set lacks (the client may have rotated its keys),
at most once per ``min_refresh`` seconds per URL so a stream of bad kids cannot make us hammer it.
"""

from __future__ import annotations

import time
from typing import Any

import httpx

MAX_JWKS_BYTES = 64 * 1024


class JwksCache:
    def __init__(self, client: httpx.AsyncClient, ttl: float = 300, min_refresh: float = 10) -> None:
        self.client = client
        self.ttl = ttl
        self.min_refresh = min_refresh
        self._cached: dict[str, tuple[float, dict[str, Any]]] = {}

    async def fetch(self, url: str, refresh: bool = False) -> dict[str, Any]:
        now = time.monotonic()
        cached = self._cached.get(url)
        if cached is not None:
            fetched_at, jwks = cached
            if now - fetched_at < (self.min_refresh if refresh else self.ttl):
                return jwks
        response = await self.client.get(url, timeout=5, follow_redirects=False)
        response.raise_for_status()
        if len(response.content) > MAX_JWKS_BYTES:
            raise ValueError("the JWKS is too large")
        jwks = response.json()
        if not isinstance(jwks, dict) or not isinstance(jwks.get("keys"), list):
            raise ValueError("not a JWKS")
        self._cached[url] = (now, jwks)
        return jwks
