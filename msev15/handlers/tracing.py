"""The HTTP server span of each request, added to the app only when tracing is on.

It is the outermost middleware, so it sees the status the client gets (the error envelope's
included) and covers a whole SSE stream. An incoming W3C ``traceparent`` makes the span (and the
turn it starts) part of the caller's trace. The span is current while the handler runs, so the
turn the handler publishes takes it as its parent (agent/tracing.py).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from msev15.common.telemetry import extract
from msev15.events.tracing import Tracing

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _route(request: web.Request) -> str | None:
    """The route's template (``/api/v1/sessions/{session_id}``), never the raw path: ids would
    make every span name unique."""
    info = request.match_info.route.resource
    return info.canonical if info is not None else None


def tracing_middleware(tracing: Tracing) -> Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]:
    @web.middleware
    async def server_span(request: web.Request, handler: Handler) -> web.StreamResponse:
        route = _route(request)
        attributes: dict[str, str | int] = {"http.request.method": request.method, "url.path": request.path,
                                            "url.scheme": request.scheme}
        if route is not None:
            attributes["http.route"] = route
        if request.query_string:
            attributes["url.query"] = request.query_string
        with tracing.tracer.start_as_current_span(
                f"{request.method} {route}" if route else request.method, context=extract(request.headers),
                kind=SpanKind.SERVER, attributes=attributes, record_exception=False,
                set_status_on_exception=False) as span:
            try:
                response = await handler(request)
            except web.HTTPException as exc:  # aiohttp's own answers (the front middleware makes most)
                _status(span, exc.status)
                raise
            except BaseException as exc:
                span.set_status(Status(StatusCode.ERROR))
                span.set_attribute("error.type", type(exc).__qualname__)
                raise
            _status(span, response.status)
            return response

    return server_span


def _status(span: trace.Span, status: int) -> None:
    span.set_attribute("http.response.status_code", status)
    if status >= 500:  # a server span's error: 4xx are the client's
        span.set_status(Status(StatusCode.ERROR))
        span.set_attribute("error.type", str(status))
