"""The Responses API on the wire (``LLM_API=responses``): input items and the streamed events.

The tool loop keeps its history as Chat Completions messages; each round is translated here:
system and user/assistant text become message items, an assistant's ``tool_calls`` become
``function_call`` items and ``tool`` results become ``function_call_output`` items with the same
``call_id``. Requests are stateless (``store: false``): the whole context goes every round, as
with Chat Completions, so a retry or a restart never depends on state kept by the model's side.

Only the events the loop needs are parsed: text deltas, function-call items and their argument
deltas, and the usage of ``response.completed``; ``response.failed`` and ``error`` raise.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson

from msev15.agent.providers.base import ModelReply, ToolCallRequest
from msev15.agent.providers.chat_api import ToolsCache, broke_off, stream_failed
from msev15.agent.providers.sse import Event, dumps, loads

_TEXT = b"response.output_text.delta"
_ARGS = b"response.function_call_arguments.delta"
_WANTED = frozenset({
    _TEXT, _ARGS, b"response.output_item.added", b"response.output_item.done", b"response.completed",
    b"response.incomplete", b"response.failed", b"error",
})


def function_tool(schema: dict[str, Any]) -> dict[str, Any]:
    """A Chat Completions tool schema in the Responses API's flat shape.

    ``strict`` is off: the Responses API turns it on by default, which would refuse schemas with
    optional properties (most of ours)."""
    function = schema["function"]
    return {"type": "function", "name": function["name"], "description": function.get("description", ""),
            "parameters": function.get("parameters") or {"type": "object", "properties": {}}, "strict": False}


def input_items(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    for message in messages:
        role = message.get("role")
        if role == "tool":
            items.append({"type": "function_call_output", "call_id": message.get("tool_call_id"),
                          "output": message.get("content") or ""})
            continue
        content = message.get("content")
        if content:
            items.append({"role": role, "content": content})
        for call in message.get("tool_calls") or ():
            function = call.get("function") or {}
            items.append({"type": "function_call", "call_id": call.get("id"), "name": function.get("name"),
                          "arguments": function.get("arguments") or "{}"})
    return items


class Responses:
    api = "responses"

    def __init__(self, model: str, path: str, *, temperature: float | None = None,
                 max_output_tokens: int | None = None) -> None:
        self.model = model
        self.path = path
        head: dict[str, Any] = {"model": model, "stream": True, "store": False}
        if temperature is not None:
            head["temperature"] = temperature
        if max_output_tokens is not None:
            head["max_output_tokens"] = max_output_tokens
        self._head = orjson.dumps(head)[:-1]
        self._tools = ToolsCache(function_tool)

    def body(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> bytes:
        parts = [self._head]
        if tools:
            parts += [b',"tools":', self._tools.json(tools)]
        parts += [b',"input":', dumps(input_items(messages)), b"}"]
        return b"".join(parts)

    async def read(self, events: AsyncIterator[Event]) -> AsyncIterator[str | ModelReply]:
        text: list[str] = []
        calls: dict[int, dict[str, str]] = {}  # by output_index
        usage: dict[str, int] | None = None
        model: str | None = None
        finish_reason: str | None = None
        finished = False
        async for name, data in events:
            if name and name not in _WANTED:
                continue
            event = loads(data)
            kind = event.get("type")
            if kind == "response.output_text.delta":
                delta = event.get("delta")
                if delta:
                    text.append(delta)
                    yield delta
            elif kind == "response.function_call_arguments.delta":
                slot = calls.get(event.get("output_index", -1))
                if slot is not None:
                    slot["arguments"] += event.get("delta") or ""
            elif kind in ("response.output_item.added", "response.output_item.done"):
                item = event.get("item") or {}
                if item.get("type") == "function_call":
                    slot = calls.setdefault(event.get("output_index", len(calls)),
                                            {"id": "", "name": "", "arguments": ""})
                    slot["id"] = item.get("call_id") or slot["id"]
                    slot["name"] = item.get("name") or slot["name"]
                    if kind == "response.output_item.done" and item.get("arguments") is not None:
                        slot["arguments"] = item["arguments"]  # the complete text wins over the deltas
            elif kind in ("response.completed", "response.incomplete"):
                response = event.get("response") or {}
                model = response.get("model")
                finish_reason = "stop" if kind == "response.completed" else (
                    (response.get("incomplete_details") or {}).get("reason") or "incomplete")
                got = response.get("usage") or {}
                if got:
                    usage = {"prompt_tokens": got.get("input_tokens", 0),
                             "completion_tokens": got.get("output_tokens", 0)}
                finished = True
                break
            elif kind == "response.failed":
                raise stream_failed((event.get("response") or {}).get("error"))
            elif kind == "error":
                raise stream_failed(event)
        if not finished:
            raise broke_off()
        tool_calls = tuple(
            ToolCallRequest(c["id"] or f"call_{i}", c["name"], c["arguments"] or "{}")
            for i, c in sorted(calls.items())
        )
        yield ModelReply("".join(text), tool_calls, usage, model, "tool_calls" if tool_calls else finish_reason)
