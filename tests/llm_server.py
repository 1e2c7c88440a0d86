"""A scripted OpenAI-compatible server on loopback: Chat Completions and the Responses API.

Serves ``/v1/chat/completions`` and ``/v1/responses`` (OpenAI shape),
``/openai/deployments/{deployment}/chat/completions?api-version=...`` and
``/openai/responses?api-version=...`` (Azure, dated api-version), ``/openai/v1/...`` (Azure's v1
URL, no dated api-version) and ``/api/projects/{project}/openai/v1/...`` (an Azure AI Foundry
project endpoint), streaming and not. Each request takes the next scripted ``Reply`` (or the
default one) and every request is recorded, so tests can assert what the real ``openai`` client
sent. ``GET /msi/token`` is an App Service managed-identity endpoint (``IDENTITY_ENDPOINT``), so
keyless Azure runs through the real ``azure-identity`` credential chain.

With ``api_key`` set, every request must carry that key (``Authorization: Bearer`` or Azure's
``api-key``) or is refused as OpenAI and Azure refuse it: ``deny_status`` (401, or 403) with
their error body. ``GET .../models`` lists one model, under the same rule (what a readiness probe
may ask without a billed call).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.llm_responses import error_frames, input_problem, response_frames


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
    fast: bool = False          # the whole stream in one write, built once (benchmarks)
    headers: dict[str, str] | None = None  # headers of an error answer (default: retry-after-ms: 1)
    fail_in_stream: bool = False  # Responses API: start the stream, then send response.failed
    end_after: int | None = None  # end the stream cleanly after this many chunks, without its last events
    model: str | None = None    # the model the answer names (default: the one asked for), as Azure names its own


# Azure refuses the Responses API at dated api-versions before this one.
RESPONSES_MIN_API_VERSION = "2025-03-01-preview"
TOKEN_PREFIX = "entra-token-"


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
    def __init__(self, default: Reply | None = None, *, record: bool = True, api_key: str | None = None,
                 deny_status: int = 401) -> None:
        self.api_key = api_key
        self.deny_status = deny_status
        self.denied = 0
        self.default = default or Reply("Hello from the scripted model.")
        self.record = record  # False: keep no per-request records (long benchmark runs)
        self.token_requests: list[dict[str, str]] = []  # managed-identity token requests (query)
        self._fast: dict[tuple[str, int, str, bool], bytes] = {}
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
        app.router.add_post("/openai/v1/chat/completions", self._handle)
        app.router.add_post("/api/projects/{project}/openai/v1/chat/completions", self._handle)
        for path in ("/v1/responses", "/openai/responses", "/openai/v1/responses",
                     "/api/projects/{project}/openai/v1/responses"):
            app.router.add_post(path, self._handle_responses)
        app.router.add_get("/msi/token", self._token)
        for path in ("/v1/models", "/openai/models", "/openai/v1/models", "/api/projects/{project}/openai/v1/models"):
            app.router.add_get(path, self._models)
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

    def _refuse(self, problem: str, param: str | None, status: int = 400) -> web.Response:
        self.rejected.append(problem)
        return web.json_response({"error": {"message": problem, "type": "invalid_request_error",
                                            "param": param, "code": None}}, status=status)

    def _denied(self, request: web.Request) -> web.Response | None:
        """The refusal of a request without the key (None when it has it, or none is required)."""
        if self.api_key is None:
            return None
        bearer = request.headers.get("Authorization", "").removeprefix("Bearer ")
        if self.api_key in (bearer, request.headers.get("api-key")):
            return None
        self.denied += 1
        error: dict[str, str | None]
        if self.deny_status == 403:  # what an Azure resource answers a caller without the role
            error = {"code": "PermissionDenied", "message": "The principal lacks the required data action "
                     "Microsoft.CognitiveServices/accounts/OpenAI/deployments/chat/completions/action."}
        else:  # OpenAI's wording, with the key masked as OpenAI masks it
            shown = f"{bearer[:3]}***{bearer[-4:]}" if len(bearer) > 8 else "***"
            error = {"message": f"Incorrect API key provided: {shown}. You can find your API key at "
                     "https://platform.openai.com/account/api-keys.", "type": "invalid_request_error",
                     "param": None, "code": "invalid_api_key"}
        return web.json_response({"error": error}, status=self.deny_status)

    async def _models(self, request: web.Request) -> web.Response:
        denied = self._denied(request)
        if denied is not None:
            return denied
        return web.json_response({"object": "list", "data": [{"id": "scripted", "object": "model"}]})

    async def _take(self, request: web.Request) -> tuple[dict[str, Any], web.Response | None]:
        """Read and record a request; refuse what Azure refuses about its URL and api-version."""
        body = await request.json()
        denied = self._denied(request)
        if denied is not None:
            return body, denied
        if self.record:
            self.requests.append(body)
            self.paths.append(request.path_qs)
            self.headers.append(dict(request.headers))
        version = request.query.get("api-version")
        if "/openai/v1/" in request.path and version not in (None, "preview", "latest"):
            return body, self._refuse(f"API version {version} is not supported on the v1 API.", "api-version")
        if request.path == "/openai/responses" and (version or "") < RESPONSES_MIN_API_VERSION:
            return body, self._refuse("Azure OpenAI Responses API is enabled only for api-version "
                                      f"{RESPONSES_MIN_API_VERSION} and later", "api-version")
        return body, None

    async def _answer(self, reply: Reply) -> web.Response | None:
        """Wait or fail as scripted; None when the reply is a normal answer."""
        if reply.hang:
            await self._release.wait()
        if reply.status != 200:
            return web.json_response({"error": {"message": f"scripted {reply.status}", "type": "server_error"}},
                                     status=reply.status,
                                     headers={"retry-after-ms": "1"} if reply.headers is None else reply.headers)
        return None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body, refused = await self._take(request)
        if refused is not None:
            return refused
        problem = history_problem(body.get("messages") or [])
        if problem is not None:  # what the real API answers to a broken history
            return self._refuse(problem, "messages")
        reply = self.script.popleft() if self.script else self.default
        failed = await self._answer(reply)
        if failed is not None:
            return failed
        if not body.get("stream"):
            return web.json_response(self._completion(body, reply))
        if reply.fast:
            return self._fast_response("chat", body, reply)
        return await self._stream(request, body, reply)

    async def _handle_responses(self, request: web.Request) -> web.StreamResponse:
        body, refused = await self._take(request)
        if refused is not None:
            return refused
        problem = input_problem(body)
        if problem is not None:
            return self._refuse(*problem)
        reply = self.script.popleft() if self.script else self.default
        failed = await self._answer(reply)
        if failed is not None:
            return failed
        if not body.get("stream"):
            return self._refuse("This scripted server streams Responses only.", "stream")
        if reply.fast:
            return self._fast_response("responses", body, reply)
        frames = error_frames("scripted failure") if reply.fail_in_stream else response_frames(body, reply)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        self.streams_started += 1
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            for sent, frame in enumerate(frames):
                if reply.gate is not None and sent == reply.gate_after:
                    self._gates.append(reply.gate)
                    await reply.gate.wait()
                if reply.delay:
                    await asyncio.sleep(reply.delay)
                if reply.drop_after is not None and sent >= reply.drop_after:
                    request.transport.close()  # type: ignore[union-attr]
                    return resp
                if reply.end_after is not None and sent >= reply.end_after:
                    break
                await resp.write(frame)
        finally:
            self.active -= 1
        await resp.write_eof()
        self.streams_finished += 1
        return resp

    def _fast_response(self, api: str, body: dict[str, Any], reply: Reply) -> web.Response:
        """The whole stream in one body, built once per reply: an instant model for benchmarks."""
        usage = bool((body.get("stream_options") or {}).get("include_usage"))
        key = (api, id(reply), str(body.get("model")), usage)
        data = self._fast.get(key)
        if data is None:
            if api == "responses":
                data = b"".join(response_frames(body, reply))
            else:
                data = b"".join(self._sse(c) for c in self._chat_chunks(body, reply, usage)) + b"data: [DONE]\n\n"
            self._fast[key] = data
        self.streams_started += 1
        self.streams_finished += 1
        return web.Response(body=data, content_type="text/event-stream")

    def _chat_chunks(self, body: dict[str, Any], reply: Reply, usage: bool) -> list[dict[str, Any]]:
        base = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": int(time.time()),
                "model": body.get("model", "scripted")}
        deltas: list[dict[str, Any]] = [{"role": "assistant", "content": ""}]
        pieces = reply.text.split(" ") if reply.text else []
        deltas += [{"content": p + (" " if i < len(pieces) - 1 else "")} for i, p in enumerate(pieces)]
        chunks = [{**base, "choices": [{"index": 0, "delta": d, "finish_reason": None}]} for d in deltas]
        chunks.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        if usage:
            chunks.append({**base, "choices": [], "usage": {"prompt_tokens": 11, "completion_tokens": len(deltas),
                                                             "total_tokens": 11 + len(deltas)}})
        return chunks

    async def _token(self, request: web.Request) -> web.Response:
        """App Service managed identity (api-version 2019-08-01): a bearer token for ``resource``."""
        self.token_requests.append(dict(request.query))
        if request.headers.get("X-IDENTITY-HEADER") != "scripted-identity-header":
            return web.json_response({"error": "missing or wrong X-IDENTITY-HEADER"}, status=401)
        resource = request.query.get("resource", "")
        return web.json_response({"access_token": f"{TOKEN_PREFIX}{len(self.token_requests)}",
                                  "expires_on": str(int(time.time()) + 3600), "resource": resource,
                                  "token_type": "Bearer"})

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
                "model": reply.model or body.get("model", "scripted")}
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
            if reply.end_after is not None and sent >= reply.end_after:
                await resp.write_eof()
                return resp
            await resp.write(self._sse({**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}))
            sent += 1
        if reply.gate is not None and sent == reply.gate_after:  # held after the last chunk, before the end
            self._gates.append(reply.gate)
            await reply.gate.wait()
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
