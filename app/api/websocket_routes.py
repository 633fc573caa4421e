"""The websocket URL of R4 Subscriptions (``app.subscriptions.websocket`` speaks the protocol).

With authorization on, the websocket request must carry ``Authorization:
Bearer <token>``; without a valid one the connection is refused during the
handshake (HTTP 403) and never accepted.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Annotated

from fastapi import Depends, WebSocket, WebSocketDisconnect

from app.api.auth import Authenticator
from app.errors import Unauthorized
from app.subscriptions.websocket import Session, WebSocketHub

MAX_MESSAGE_CHARS = 200  # "bind <id>" is short; anything longer is not a command


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
    try:
        caller = await auth.caller(websocket.headers.get("authorization"))
    except Unauthorized:
        await websocket.close(code=1008)  # policy violation, before accepting: the handshake gets 403
        return
    await websocket.accept()
    session = Session(caller)
    sender = asyncio.create_task(_forward(websocket, session))
    try:
        while True:
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
            await websocket.close(code=1008, reason="too many undelivered pings")
            return
