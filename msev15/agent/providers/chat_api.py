"""Chat Completions on the wire: the request body and the streamed chunks.

The body is written as JSON bytes once per round: the fixed head and the tool schemas are
serialized once and reused while the registry hands over the same schema list (it rebuilds the
list only when the set of tools changes), so a turn never re-walks unchanged schemas.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson

from msev15.agent.providers.base import LLMError, ModelReply, ToolCallRequest
from msev15.agent.providers.sse import Event, dumps, loads

_DONE = b"[DONE]"


class ToolsCache:
    """The JSON of the last tool list seen, reused while the caller passes the same list object."""

    def __init__(self, convert: Any = None) -> None:
        self._convert = convert
        self._source: list[dict[str, Any]] | None = None  # held, so its id is never reused
        self._json = b""

    def json(self, tools: list[dict[str, Any]]) -> bytes:
        if tools is not self._source:
            self._json = dumps([self._convert(t) for t in tools] if self._convert else tools)
            self._source = tools
        return self._json


def broke_off() -> LLMError:
    return LLMError("llm_error", "The language model's answer broke off before it ended.", 502)


def stream_failed(payload: Any) -> LLMError:
    message = payload.get("message") if isinstance(payload, dict) else None
    detail = f": {message}" if message else "."
    return LLMError("llm_error", f"The language model failed while answering{detail}", 502)


class ChatCompletions:
    api = "chat"

    def __init__(self, model: str, path: str, *, temperature: float | None = None,
                 max_output_tokens: int | None = None) -> None:
        self.model = model
        self.path = path
        head: dict[str, Any] = {"model": model, "stream": True, "stream_options": {"include_usage": True}}
        if temperature is not None:
            head["temperature"] = temperature
        if max_output_tokens is not None:
            head["max_completion_tokens"] = max_output_tokens
        self._head = orjson.dumps(head)[:-1]
        self._tools = ToolsCache()

    def body(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> bytes:
        parts = [self._head]
        if tools:
            parts += [b',"tools":', self._tools.json(tools)]
        parts += [b',"messages":', dumps(messages), b"}"]
        return b"".join(parts)

    async def read(self, events: AsyncIterator[Event]) -> AsyncIterator[str | ModelReply]:
        text: list[str] = []
        calls: dict[int, dict[str, str]] = {}
        usage: dict[str, int] | None = None
        model: str | None = None
        finish_reason: str | None = None
        finished = False  # [DONE], or a finish_reason (some compatible servers omit [DONE])
        async for _, data in events:
            if data == _DONE:
                finished = True
                break
            chunk = loads(data)
            if "error" in chunk:  # an error after the stream started (HTTP 200 already sent)
                raise stream_failed(chunk["error"])
            if chunk.get("usage"):
                got = chunk["usage"]
                usage = {"prompt_tokens": got.get("prompt_tokens", 0),
                         "completion_tokens": got.get("completion_tokens", 0)}
            if model is None:
                model = chunk.get("model")
            choices = chunk.get("choices")
            if not choices:
                continue
            if choices[0].get("finish_reason"):
                finished = True
                finish_reason = choices[0]["finish_reason"]
            delta = choices[0].get("delta")
            if not delta:
                continue
            content = delta.get("content")
            if content:
                text.append(content)
                yield content
            for part in delta.get("tool_calls") or ():
                slot = calls.setdefault(part.get("index", 0), {"id": "", "name": "", "arguments": ""})
                if part.get("id"):
                    slot["id"] = part["id"]
                function = part.get("function")
                if function:
                    slot["name"] += function.get("name") or ""
                    slot["arguments"] += function.get("arguments") or ""
        if not finished:
            raise broke_off()
        tool_calls = tuple(
            ToolCallRequest(c["id"] or f"call_{i}", c["name"], c["arguments"] or "{}")
            for i, c in sorted(calls.items())
        )
        yield ModelReply("".join(text), tool_calls, usage, model, finish_reason)
