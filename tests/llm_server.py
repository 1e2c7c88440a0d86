"""A scripted OpenAI-compatible Chat Completions server on loopback.

Serves ``/v1/chat/completions`` (OpenAI shape) and
``/openai/deployments/{deployment}/chat/completions?api-version=...`` (Azure shape), streaming and
not. Each request takes the next scripted ``Reply`` (or the default one) and every request is
recorded, so tests can assert what the real ``openai`` client sent.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class Call:
    name: str
    arguments: dict[str, Any] | str
    id: str | None = None


@dataclass
class Reply:
    text: str = ""
    tool_calls: list[Call] = field(default_factory=list)
    status: int = 200           # 429/500/...: answer with this error instead
    delay: float = 0.0          # seconds before each chunk (slow model)
    hang: bool = False          # never answer (client timeout)
    chunk_words: bool = True    # stream word by word
    drop_after: int | None = None  # close the connection after this many chunks
    gate: asyncio.Event | None = None  # after ``gate_after`` chunks, wait for this event
    gate_after: int = 0


def history_problem(messages: list[dict[str, Any]]) -> str | None:
    """Why the real Chat Completions API would refuse this history (400), or None.

    Every assistant message with ``tool_calls`` must be followed by one ``tool`` message for each
    call id, and a ``tool`` message must answer a call of the assistant message before it."""
    open_ids: set[str] = set()
    for message in messages:
        role = message.get("role")
        if role == "tool":
            if message.get("tool_call_id") not in open_ids:
                return ("Invalid parameter: messages with role 'tool' must be a response to a preceeding "
                        "message with 'tool_calls'.")
            open_ids.discard(message["tool_call_id"])
            continue
        if open_ids:
            return ("An assistant message with 'tool_calls' must be followed by tool messages responding to "
                    f"each 'tool_call_id'. The following tool_call_ids did not have response messages: "
                    f"{', '.join(sorted(open_ids))}")
        if role == "assistant":
            open_ids = {call["id"] for call in message.get("tool_calls") or ()}
    if open_ids:
        return ("An assistant message with 'tool_calls' must be followed by tool messages responding to each "
                "'tool_call_id'.")
    return None


class ScriptedLLM:
    def __init__(self, default: Reply | None = None) -> None:
        self.default = default or Reply("Hello from the scripted model.")
        self.script: deque[Reply] = deque()
        self.requests: list[dict[str, Any]] = []
        self.paths: list[str] = []
        self.headers: list[dict[str, str]] = []
        self.rejected: list[str] = []
        self.streams_started = 0
        self.streams_finished = 0
        self.active = 0  # streams being sent right now
        self.max_active = 0
        self._gates: list[asyncio.Event] = []
        self._runner: web.AppRunner | None = None
        self.url = ""
        self._release = asyncio.Event()

    def push(self, *replies: Reply) -> None:
        self.script.extend(replies)

    async def start(self) -> ScriptedLLM:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._handle)
        app.router.add_post("/openai/deployments/{deployment}/chat/completions", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def close(self) -> None:
        self._release.set()
        for gate in self._gates:  # a held stream must not hold the server's shutdown
            gate.set()
        if self._runner is not None:
            await self._runner.cleanup()

    async def __aenter__(self) -> ScriptedLLM:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append(body)
        self.paths.append(request.path_qs)
        self.headers.append(dict(request.headers))
        problem = history_problem(body.get("messages") or [])
        if problem is not None:  # what the real API answers to a broken history
            self.rejected.append(problem)
            return web.json_response({"error": {"message": problem, "type": "invalid_request_error",
                                                "param": "messages", "code": None}}, status=400)
        reply = self.script.popleft() if self.script else self.default
        if reply.hang:
            await self._release.wait()
        if reply.status != 200:
            return web.json_response({"error": {"message": f"scripted {reply.status}", "type": "server_error"}},
                                     status=reply.status, headers={"retry-after-ms": "1"})
        if not body.get("stream"):
            return web.json_response(self._completion(body, reply))
        return await self._stream(request, body, reply)

    def _completion(self, body: dict[str, Any], reply: Reply) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": reply.text or None}
        if reply.tool_calls:
            message["tool_calls"] = [self._call_json(i, c) for i, c in enumerate(reply.tool_calls)]
        return {"id": "chatcmpl-1", "object": "chat.completion", "created": int(time.time()),
                "model": body.get("model", "scripted"),
                "choices": [{"index": 0, "message": message,
                             "finish_reason": "tool_calls" if reply.tool_calls else "stop"}],
                "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}}

    @staticmethod
    def _call_json(index: int, call: Call) -> dict[str, Any]:
        args = call.arguments if isinstance(call.arguments, str) else json.dumps(call.arguments)
        return {"id": call.id or f"call_{index}", "type": "function",
                "function": {"name": call.name, "arguments": args}}

    async def _stream(self, request: web.Request, body: dict[str, Any], reply: Reply) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        base = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": int(time.time()),
                "model": body.get("model", "scripted")}
        chunks: list[dict[str, Any]] = [{"role": "assistant", "content": ""}]
        if reply.text:
            pieces = reply.text.split(" ") if reply.chunk_words else [reply.text]
            chunks += [{"content": p + (" " if i < len(pieces) - 1 else "")} for i, p in enumerate(pieces)]
        for index, call in enumerate(reply.tool_calls):
            full = self._call_json(index, call)
            args = full["function"]["arguments"]
            half = len(args) // 2
            # Split the arguments across two chunks, as real models do.
            chunks.append({"tool_calls": [{"index": index, "id": full["id"], "type": "function",
                                           "function": {"name": call.name, "arguments": args[:half]}}]})
            chunks.append({"tool_calls": [{"index": index, "function": {"arguments": args[half:]}}]})
        self.streams_started += 1
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            return await self._send_chunks(request, resp, body, base, chunks, reply)
        finally:
            self.active -= 1

    async def _send_chunks(self, request: web.Request, resp: web.StreamResponse, body: dict[str, Any],
                           base: dict[str, Any], chunks: list[dict[str, Any]], reply: Reply) -> web.StreamResponse:
        sent = 0
        for delta in chunks:
            if reply.gate is not None and sent == reply.gate_after:
                self._gates.append(reply.gate)
                await reply.gate.wait()
            if reply.delay:
                await asyncio.sleep(reply.delay)
            if reply.drop_after is not None and sent >= reply.drop_after:
                request.transport.close()  # type: ignore[union-attr]
                return resp
            await resp.write(self._sse({**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}))
            sent += 1
        finish = "tool_calls" if reply.tool_calls else "stop"
        await resp.write(self._sse({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]}))
        if (body.get("stream_options") or {}).get("include_usage"):
            await resp.write(self._sse({**base, "choices": [],
                                        "usage": {"prompt_tokens": 11, "completion_tokens": len(chunks),
                                                  "total_tokens": 11 + len(chunks)}}))
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        self.streams_finished += 1
        return resp

    @staticmethod
    def _sse(obj: dict[str, Any]) -> bytes:
        return b"data: " + json.dumps(obj).encode() + b"\n\n"
