"""The ``Expect`` request header, answered the same way on every route.

aiohttp handles ``Expect`` before any middleware runs: ``100-continue`` gets its interim
response, and any other value a bare text 417, with no request id and no error envelope (a
fuzzed header found it). RFC 9110 section 10.1.1 lets a server ignore an expectation it does not
support ("MAY respond with 417"); the service does, as nginx does: ``100-continue`` is honoured
and any other expectation is ignored, so the request gets the answer it would get without it,
through the front door like every other. aiohttp takes the handler per route, so
:func:`install` sets it on every route once they all exist (after CORS added its preflights).
Routes aiohttp makes per request for a path or method it does not serve (404, 405) keep its
default.
"""

from __future__ import annotations

from aiohttp import HttpVersion11, hdrs, web
from aiohttp.web_urldispatcher import ResourceRoute


async def continue_or_ignore(request: web.Request) -> None:
    """Send ``100 Continue`` when asked to (HTTP/1.1 only, as aiohttp does); ignore the rest."""
    if request.version != HttpVersion11:
        return
    if request.headers.get(hdrs.EXPECT, "").strip().lower() == "100-continue":
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.writer.output_size = 0  # the interim response is not the answer's size


def install(app: web.Application) -> None:
    """Give every route of ``app`` :func:`continue_or_ignore` (call after the last route)."""
    for route in app.router.routes():
        if isinstance(route, ResourceRoute):
            # aiohttp reads this attribute per request and offers no setter after registration.
            route._expect_handler = continue_or_ignore
