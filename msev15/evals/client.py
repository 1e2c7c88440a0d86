"""One conversation turn against a running service, over its public streaming API.

``POST /api/v1/chat/stream``, read to its terminal event: the answer's text, the tool calls with
their arguments, and how the turn ended. Any deployment works: the eval needs nothing the API
does not give every client.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import aiohttp

TURN_TIMEOUT_SECONDS = 300.0


@dataclass
class TurnResult:
    reply: str = ""
    tool_calls: list[tuple[str, Any]] = field(default_factory=list)  # (name, arguments), in order
    status: str = "failed"  # completed, waiting, with_human or failed
    pending: list[str] = field(default_factory=list)  # tools waiting for a decision
    waiting: list[dict[str, Any]] = field(default_factory=list)  # their input_required events
    error: str | None = None  # the error event's (or the refusal's) code and message
    turn_id: str | None = None
    results: list[str] = field(default_factory=list)  # call ids of the tool results, in order


class EvalClient:
    def __init__(self, url: str, *, api_key: str | None = None, tenant: str | None = None) -> None:
        self.url = url.rstrip("/")
        self.api_key = api_key
        self.tenant = tenant
        self._http: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> EvalClient:
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        self._http = aiohttp.ClientSession(headers=headers,
                                           timeout=aiohttp.ClientTimeout(total=TURN_TIMEOUT_SECONDS))
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._http is not None:
            await self._http.close()

    async def say(self, session_id: str, message: str, tenant: str | None = None) -> TurnResult:
        assert self._http is not None, "use EvalClient in 'async with'"
        body: dict[str, Any] = {"session_id": session_id, "message": message}
        if tenant or self.tenant:
            body["tenant_id"] = tenant or self.tenant
        return await self._read(self._http.post(self.url + "/api/v1/chat/stream", json=body,
                                                 headers={"Accept": "text/event-stream"}))

    async def decide(self, session_id: str, waiting: list[dict[str, Any]], decision: dict[str, Any],
                     tenant: str | None = None) -> TurnResult:
        """Decide every call of ``waiting`` (the previous turn's ``input_required`` events) the same
        way, through ``POST /api/v1/sessions/{id}/pending/{call_id}``; then follow the continuation
        turn the last decision started, as a client would."""
        assert self._http is not None, "use EvalClient in 'async with'"
        tenant = tenant or self.tenant
        query = {"tenant_id": tenant} if tenant else {}
        base = f"{self.url}/api/v1/sessions/{quote(session_id, safe='')}"
        turn_id: str | None = None
        try:
            for call in waiting:
                body = dict(decision) if call.get("kind") == "approval" else {"output": decision}
                async with self._http.post(f"{base}/pending/{quote(str(call.get('call_id')), safe='')}",
                                           json=body, params=query) as resp:
                    if resp.status != 202:
                        return TurnResult(error=f"HTTP {resp.status}: {_said(await resp.text())}")
                    turn_id = (await resp.json()).get("turn_id") or turn_id
        except (aiohttp.ClientError, TimeoutError) as exc:
            return TurnResult(error=f"{type(exc).__name__}: {exc}")
        if turn_id is None:
            return TurnResult(error="the decisions started no continuation turn")
        result = await self._read(self._http.get(f"{base}/turns/{quote(turn_id, safe='')}/events", params=query,
                                                 headers={"Accept": "text/event-stream"}))
        # An approved call runs in the continuation: its stream has the result, not a second
        # tool_call, so it counts as a call made, with the arguments it waited with.
        called = set(result.results) if decision.get("approve") is True else set()
        for call in waiting:
            if call.get("kind") == "approval" and call.get("call_id") in called \
                    and (str(call.get("name")), call.get("arguments")) not in result.tool_calls:
                result.tool_calls.append((str(call.get("name")), call.get("arguments")))
        return result

    async def _read(self, request: Any) -> TurnResult:
        """A turn's stream, read to its terminal event."""
        result = TurnResult()
        try:
            async with request as resp:
                if resp.status != 200:
                    text = await resp.text()
                    result.error = f"HTTP {resp.status}: {_said(text)}"
                    return result
                result.turn_id = resp.headers.get("X-Turn-ID")
                async for raw in resp.content:
                    line = raw.decode("utf-8").rstrip("\r\n")
                    if line.startswith("data: "):
                        _take(result, json.loads(line[len("data: "):]))
        except (aiohttp.ClientError, TimeoutError) as exc:
            result.error = f"{type(exc).__name__}: {exc}"
        return result


def _said(text: str) -> str:
    try:
        body = json.loads(text)
    except ValueError:
        return text[:200]
    return f"{body.get('error')}: {body.get('message')}" if isinstance(body, dict) else text[:200]


def _take(result: TurnResult, event: dict[str, Any]) -> None:
    kind = event.get("type")
    if kind == "token":
        result.reply += str(event.get("content", ""))
    elif kind == "tool_call":
        result.tool_calls.append((str(event.get("name")), event.get("arguments")))
    elif kind == "tool_result":
        result.results.append(str(event.get("call_id")))
    elif kind == "input_required":  # a call that waits: its name, id, kind and arguments
        result.waiting.append(event)
        result.pending.append(str(event.get("name")))
    elif kind == "done":
        result.status = str(event.get("status") or "completed")
    elif kind == "error":
        result.status = "failed"
        result.error = f"{event.get('error')}: {event.get('message')}"
