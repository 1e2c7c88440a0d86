"""The reference: the least a bare aiohttp app must do to serve the same requests.

``POST /api/v1/chat`` reads and checks the same JSON body as the service and answers with the same
response shape; ``POST /api/v1/chat/stream`` streams the same answer with aiohttp-sse, one event
per token plus a ``done`` event, in the service's wire format. The paths match the service's, so
one load generator drives both. No middlewares, no sessions beyond a message counter: whatever
the service spends above this is its own cost.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime

from aiohttp import web
from aiohttp_sse import sse_response

from benchmarks.provider import answer_tokens

COUNTS = web.AppKey("bench.reference.counts", dict)
TOKENS = web.AppKey("bench.reference.tokens", tuple)
DELAY = web.AppKey("bench.reference.delay", float)


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


async def _body(request: web.Request) -> tuple[str, str, str]:
    try:
        body = await request.json()
    except ValueError:
        raise web.HTTPBadRequest(text="invalid JSON") from None
    if (not isinstance(body, dict) or not isinstance(body.get("session_id"), str)
            or not isinstance(body.get("message"), str)):
        raise web.HTTPBadRequest(text="session_id and message are required strings")
    return body["session_id"], str(body.get("tenant_id") or "default"), body["message"]


def _count(app: web.Application, tenant_id: str, session_id: str) -> int:
    counts = app[COUNTS]
    key = (tenant_id, session_id)
    counts[key] = count = counts.get(key, 0) + 2
    return count


async def chat(request: web.Request) -> web.Response:
    session_id, tenant_id, _ = await _body(request)
    tokens = request.app[TOKENS]
    delay = request.app[DELAY]
    if delay:
        await asyncio.sleep(delay * len(tokens))
    return web.json_response({
        "session_id": session_id,
        "message": "".join(tokens),
        "timestamp": _now_iso(),
        "message_count": _count(request.app, tenant_id, session_id),
        "tenant_id": tenant_id,
    })


async def chat_stream(request: web.Request) -> web.StreamResponse:
    session_id, tenant_id, _ = await _body(request)
    delay = request.app[DELAY]
    async with sse_response(request, allow_all_methods=True) as resp:
        for token in request.app[TOKENS]:
            if delay:
                await asyncio.sleep(delay)
            await resp.send(json.dumps({"type": "token", "content": token, "session_id": session_id}))
        count = _count(request.app, tenant_id, session_id)
        await resp.send(json.dumps({"type": "done", "session_id": session_id, "message_count": count}))
    return resp


async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "healthy", "timestamp": _now_iso()})


def create_reference_app(tokens: int = 20, delay: float = 0.0) -> web.Application:
    """The reference app answering with ``tokens`` tokens, waiting ``delay`` seconds before each."""
    if delay < 0:
        raise ValueError(f"delay must be >= 0 seconds, got {delay}")
    app = web.Application()
    app[TOKENS] = answer_tokens(tokens)
    app[DELAY] = float(delay)
    app[COUNTS] = {}
    app.router.add_post("/api/v1/chat", chat)
    app.router.add_post("/api/v1/chat/stream", chat_stream)
    app.router.add_get("/health", health)
    return app
