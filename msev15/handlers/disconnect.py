"""Noticing that a client left while its handler waits.

aiohttp does not cancel a handler when its client disconnects (``handler_cancellation`` is off,
and turning it on would cancel every handler mid-step, the SSE relays and their clean endings
included). A plain ``POST /api/v1/chat`` has nobody to deliver its answer to once its client is
gone, so it waits for the turn's end *or* the client's departure, and on departure cancels the
turn (a streaming turn is different: it stays resumable, and runs on).

Under ``msev15 serve`` the connection's protocol (:class:`msev15.connections.GuardedProtocol`)
completes a future when the connection is lost, so departure is noticed at once. Under aiohttp's
own runner (``web.run_app``) the transport is checked every ``POLL_SECONDS`` instead; a server
run with ``handler_cancellation`` (aiohttp's test server) cancels the handler, and the chat
handler cancels the turn on its way out.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

POLL_SECONDS = 0.5


async def client_gone(request: web.Request) -> None:
    """Return when the request's connection has closed."""
    lost = getattr(request.protocol, "lost", None)
    if isinstance(lost, asyncio.Future):
        await asyncio.shield(lost)  # shared by the connection: never cancel it for one waiter
        return
    while True:
        transport = request.transport
        if transport is None or transport.is_closing():
            return
        await asyncio.sleep(POLL_SECONDS)
