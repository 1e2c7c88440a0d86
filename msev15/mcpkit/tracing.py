"""Server spans of the project's MCP servers, in the caller's trace.

The service's MCP client sends each call's W3C ``traceparent`` in the request's ``_meta`` (the MCP
semantic conventions' carrier: the HTTP request itself is written by the client's transport task,
which is not the caller's). :func:`traced` wraps a server's ASGI app: for each JSON-RPC request it
reads the body once, continues the trace named in ``params._meta`` (or, failing that, in the HTTP
headers) with a SERVER span ``tools/call {tool}`` (or the method's name), and hands the same body
on. Installed by :class:`msev15.mcpkit.runner.McpHttpServer` only when tracing is configured.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from msev15.common.telemetry import extract

if TYPE_CHECKING:
    from opentelemetry.trace import Tracer


def _request(body: bytes) -> dict[str, Any] | None:
    """The JSON-RPC request in ``body`` (not a notification, not a batch), or None."""
    try:
        message = json.loads(body)
    except ValueError:
        return None
    if isinstance(message, dict) and isinstance(message.get("method"), str) and "id" in message:
        return message
    return None


def _span_name(method: str, params: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    attributes: dict[str, Any] = {"mcp.method.name": method}
    name = params.get("name")
    if method == "tools/call" and isinstance(name, str):
        attributes.update({"gen_ai.tool.name": name, "gen_ai.operation.name": "execute_tool"})
        return f"{method} {name}", attributes
    return method, attributes


def traced(app: ASGIApp, tracer: Tracer) -> ASGIApp:
    from opentelemetry.trace import SpanKind, Status, StatusCode

    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await app(scope, receive, send)
            return
        chunks: list[bytes] = []
        first: Message = {"type": "http.request", "body": b"", "more_body": True}
        while first.get("more_body"):
            first = await receive()
            if first["type"] != "http.request":  # the client went away while sending
                await app(scope, receive, send)
                return
            chunks.append(first.get("body", b""))
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        request = _request(body)
        if request is None:
            await app(scope, replay, send)
            return
        params = request.get("params") if isinstance(request.get("params"), dict) else {}
        assert isinstance(params, dict)
        meta = params.get("_meta")
        carrier = ({k: v for k, v in meta.items() if isinstance(v, str)} if isinstance(meta, dict) else {})
        if "traceparent" not in carrier:
            carrier = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        name, attributes = _span_name(str(request["method"]), params)
        attributes["jsonrpc.request.id"] = str(request["id"])
        with tracer.start_as_current_span(name, extract(carrier), kind=SpanKind.SERVER, attributes=attributes,
                                          record_exception=False, set_status_on_exception=False) as span:

            async def send_status(message: Message) -> None:
                if message["type"] == "http.response.start":
                    status = int(message["status"])
                    span.set_attribute("http.response.status_code", status)
                    if status >= 500:
                        span.set_status(Status(StatusCode.ERROR))
                        span.set_attribute("error.type", str(status))
                await send(message)

            try:
                await app(scope, replay, send_status)
            except BaseException as exc:
                span.set_status(Status(StatusCode.ERROR))
                span.set_attribute("error.type", type(exc).__qualname__)
                raise

    return wrapped
