"""The front door: the first thing every request passes through.

It gives the request its id (handlers/errors.py ``begin_request``), turns any failure below into
the envelope (``failure_response``), and counts and times the request by route template
(handlers/metrics.py). One middleware rather than three: each middleware level is a call on every
request and a coroutine frame held for the whole request, and an open stream holds it for minutes.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from aiohttp import web
from aiohttp.typedefs import Handler

from msev15.events.metrics import ServiceMetrics
from msev15.handlers.errors import begin_request, failure_response
from msev15.handlers.metrics import METHODS, STREAM_ROUTES, route_of


def front_middleware(metrics: ServiceMetrics) -> Callable[..., object]:
    counter, histogram = metrics.http_requests, metrics.http_duration
    streams = metrics.open_streams

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        begin_request(request)
        route = route_of(request)
        stream = route in STREAM_ROUTES
        status = 500  # unless an answer says otherwise (a cancelled request has none)
        if stream:
            streams[0] += 1
        try:
            try:
                response = await handler(request)
            except Exception as exc:
                response = failure_response(request, exc)
            status = response.status
            return response
        except web.HTTPException as exc:  # a redirect, passed on as aiohttp expects
            status = exc.status
            raise
        finally:
            if stream:
                streams[0] -= 1
            method = request.method if request.method in METHODS else "other"  # any token is a method
            counter.inc((route, method, str(status)))
            histogram.observe(time.perf_counter() - started, (route, method))

    return middleware
