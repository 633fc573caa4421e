"""The websocket URL of R4 Subscriptions (``app.subscriptions.websocket`` speaks the protocol).

With authorization on, an ``Authorization: Bearer <token>`` header that is
not a valid access token gets the connection refused during the handshake
(HTTP 403), never accepted. A connection without the header is accepted,
but may only ``bind-with-token`` with a token of ``$get-ws-binding-token``
(the Backport IG's way for browsers, which cannot set the header); R4's
``bind [id]`` needs the access token.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Annotated

from fastapi import Depends, WebSocket, WebSocketDisconnect

from app.api.auth import Authenticator
from app.errors import Unauthorized
from app.subscriptions.websocket import Session, WebSocketHub

UNBOUND_SECONDS = 30.0  # how long a connection without an access token may stay unbound
MAX_MESSAGE_CHARS = 200  # "bind <id>" and "bind-with-token <token>" are short; anything longer is not a command


async def authenticator(websocket: WebSocket) -> Authenticator:
    auth: Authenticator = websocket.app.state.auth
    return auth


async def websocket_hub(websocket: WebSocket) -> WebSocketHub:
    hub: WebSocketHub = websocket.app.state.subscriptions.hub
    return hub


async def subscription_websocket(
    websocket: WebSocket,
    auth: Annotated[Authenticator, Depends(authenticator)],
    hub: Annotated[WebSocketHub, Depends(websocket_hub)],
) -> None:
    authorization = websocket.headers.get("authorization")
    try:
        caller = await auth.caller(authorization) if authorization or not auth.enforced else None
    except Unauthorized:
        await websocket.close(code=1008)  # policy violation, before accepting: the handshake gets 403
        return
    await websocket.accept()
    session = Session(caller)
    sender = asyncio.create_task(_forward(websocket, session))
    try:
        while True:
            if session.caller is None and not session.bound:  # no token yet: bind-with-token soon, or go
                try:
                    async with asyncio.timeout(UNBOUND_SECONDS):  # not wait_for: see Dispatcher.run
                        message = await websocket.receive_text()
                except TimeoutError:
                    await websocket.close(code=1008, reason="bind-with-token was not sent in time")
                    return
            else:
                message = await websocket.receive_text()
            await hub.handle(session, message[:MAX_MESSAGE_CHARS])
    except WebSocketDisconnect:
        pass
    finally:
        hub.drop(session)
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sender


async def _forward(websocket: WebSocket, session: Session) -> None:
    """Send what the hub queued for this client, in order; a client too slow to keep up is closed."""
    while True:
        message = await session.outgoing.get()
        await websocket.send_text(message)
        if session.overflowed:
            await websocket.close(code=1008, reason="too many undelivered messages")
            return
