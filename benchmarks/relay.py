"""The token-relay scenario's two extra processes: an instant model and the lean relay.

* ``upstream_app``: the scripted OpenAI-compatible server of the tests (``tests/llm_server.py``)
  answering every request, Chat Completions or Responses, with the same K-token answer in one
  write (an instant model), recording nothing.
* ``create_relay_app``: the least an aiohttp service must do to relay that model: for each
  ``POST /api/v1/chat/stream`` it posts to the upstream's ``/v1/chat/completions`` with aiohttp's
  client (one pooled session), reads the SSE lines and writes one SSE frame per token plus
  ``done``, in the service's wire format. No tools, no history, no middlewares.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web
from aiohttp_sse import sse_response

from benchmarks.provider import answer_tokens

UPSTREAM = web.AppKey("bench.relay.upstream", str)
CLIENT = web.AppKey("bench.relay.client", aiohttp.ClientSession)
MODEL = "bench-relay"


async def upstream_app(tokens: int) -> web.AppRunner:
    """The instant model, started on 127.0.0.1 (its URL is ``runner.addresses``)."""
    from tests.llm_server import Reply, ScriptedLLM

    text = "".join(answer_tokens(tokens)).rstrip()  # split on spaces: ``tokens`` deltas
    server = await ScriptedLLM(Reply(text, fast=True), record=False).start()
    assert server._runner is not None
    return server._runner


async def _chat_stream(request: web.Request) -> web.StreamResponse:
    body = await request.json()
    session_id = body["session_id"]
    payload = {"model": MODEL, "stream": True, "messages": [{"role": "user", "content": body["message"]}]}
    async with request.app[CLIENT].post(request.app[UPSTREAM] + "/v1/chat/completions", json=payload) as upstream:
        upstream.raise_for_status()
        async with sse_response(request, allow_all_methods=True) as resp:
            async for line in upstream.content:
                if not line.startswith(b"data: ") or line.startswith(b"data: [DONE]"):
                    continue
                choices = json.loads(line[6:])["choices"]
                content = choices[0]["delta"].get("content") if choices else None
                if content:
                    await resp.send(json.dumps({"type": "token", "content": content, "session_id": session_id}))
            await resp.send(json.dumps({"type": "done", "session_id": session_id, "message_count": 2}))
    return resp


async def _client_ctx(app: web.Application) -> AsyncIterator[None]:
    app[CLIENT] = aiohttp.ClientSession()
    yield
    await app[CLIENT].close()


def create_relay_app(upstream: str) -> web.Application:
    app = web.Application()
    app[UPSTREAM] = upstream.rstrip("/")
    app.cleanup_ctx.append(_client_ctx)
    app.router.add_post("/api/v1/chat/stream", _chat_stream)
    app.router.add_get("/health", lambda _: web.json_response({"status": "healthy"}))  # type: ignore[arg-type,return-value]
    return app
