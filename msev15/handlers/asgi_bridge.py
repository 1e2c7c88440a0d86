"""One aiohttp request served by an ASGI callable (the ``mcp`` package's Streamable HTTP
transport), so that transport runs inside our app, behind our middlewares (request id, error
envelope, authentication, rate limits, metrics), without a second HTTP server.

The body is read by aiohttp (``client_max_size`` applies) and handed over in one
``http.request`` message; the ASGI response becomes a :class:`aiohttp.web.StreamResponse`
written as its ``http.response.body`` messages arrive, so an SSE answer streams. ``state`` is
the ASGI scope's ``state``: how the handler tells the ASGI side who is calling.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from aiohttp import web
from multidict import CIMultiDict

# What our routes put in the scope's state: the caller's tenant, and whether the request was
# already counted against the tenant's rate limit.
TENANT_STATE, COUNTED_STATE = "msev15_tenant", "msev15_counted"

Message = MutableMapping[str, Any]
Asgi = Callable[[MutableMapping[str, Any], Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]],
                Awaitable[None]]


def _scope(request: web.Request, state: dict[str, Any]) -> dict[str, Any]:
    peer = request.transport.get_extra_info("peername") if request.transport is not None else None
    sock = request.transport.get_extra_info("sockname") if request.transport is not None else None
    return {
        "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
        "method": request.method, "scheme": request.scheme, "path": request.path,
        "raw_path": request.raw_path.split("?", 1)[0].encode(), "query_string": request.query_string.encode(),
        "root_path": "", "headers": [(k.lower(), v) for k, v in request.raw_headers],
        "client": tuple(peer[:2]) if peer else None, "server": tuple(sock[:2]) if sock else None, "state": state,
    }


async def serve_asgi(app: Asgi, request: web.Request, state: dict[str, Any]) -> web.StreamResponse:
    body = await request.read()
    finished = asyncio.Event()
    given = False
    response: web.StreamResponse | None = None

    async def receive() -> Message:
        nonlocal given
        if not given:
            given = True
            return {"type": "http.request", "body": body, "more_body": False}
        await finished.wait()  # the request has no more body; the next message is the end
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        nonlocal response
        if message["type"] == "http.response.start":
            headers: CIMultiDict[str] = CIMultiDict(
                (k.decode("latin-1"), v.decode("latin-1")) for k, v in message.get("headers", ()))
            headers.popall("content-length", None)  # aiohttp frames the body itself
            response = web.StreamResponse(status=message["status"], headers=headers)
            await response.prepare(request)
        elif message["type"] == "http.response.body":
            assert response is not None, "ASGI body before its start"
            chunk = message.get("body", b"")
            if chunk:
                await response.write(chunk)
            if not message.get("more_body", False):
                await response.write_eof()
                finished.set()

    try:
        await app(_scope(request, state), receive, send)
    finally:
        finished.set()
    if response is None:
        raise RuntimeError("the ASGI app sent no response")
    return response
