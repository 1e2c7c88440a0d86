"""The lean relay's own pieces: SSE framing, request bodies, and what the scripted API refuses."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson

from msev15.agent.providers.chat_api import ChatCompletions
from msev15.agent.providers.openai_compat import retry_after
from msev15.agent.providers.responses_api import Responses, input_items
from msev15.agent.providers.sse import sse_events
from tests.llm_server import ScriptedLLM

TOOLS: list[dict[str, Any]] = [{"type": "function", "function": {"name": "get_order", "description": "Find an order.",
                                           "parameters": {"type": "object", "properties": {"id": {"type": "string"}}}}}]


async def _events(*chunks: bytes) -> list[tuple[bytes, bytes]]:
    async def source() -> AsyncIterator[bytes]:
        for chunk in chunks:
            yield chunk

    return [event async for event in sse_events(source())]


async def test_sse_events_survive_any_chunking_and_line_ending() -> None:
    stream = (b": keep-alive comment\n\nevent: response.output_text.delta\r\ndata: {\"a\": 1}\r\n\r\n"
              b"data: first line\ndata: second line\n\nid: 7\nretry: 10\n\ndata:no-space\n\ndata: [DONE]\n\n")
    expected = [(b"response.output_text.delta", b'{"a": 1}'), (b"", b"first line\nsecond line"),
                (b"", b"no-space"), (b"", b"[DONE]")]
    assert await _events(stream) == expected
    assert await _events(*[stream[i:i + 1] for i in range(len(stream))]) == expected  # byte by byte
    assert await _events(b"data: complete\n\ndata: cut off\n") == [(b"", b"complete")]  # the rest is discarded


def test_chat_body_is_the_json_the_sdk_would_send_and_reuses_tool_json() -> None:
    wire = ChatCompletions("gpt-test", "/chat/completions")
    messages = [{"role": "user", "content": "héllo \u2028"}]
    body = json.loads(wire.body(messages, TOOLS))
    assert body == {"model": "gpt-test", "stream": True, "stream_options": {"include_usage": True},
                    "tools": TOOLS, "messages": messages}
    assert "tools" not in json.loads(wire.body(messages, []))
    first = wire._tools.json(TOOLS)
    assert wire._tools.json(TOOLS) is first  # the same list: not serialized again
    changed = [*TOOLS, {"type": "function", "function": {"name": "other", "parameters": {}}}]
    assert len(orjson.loads(wire._tools.json(changed))) == 2


def test_responses_input_from_a_tool_loop_history() -> None:
    history: list[dict[str, Any]] = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Where is ORD-1?"},
        {"role": "assistant", "content": None,
         "tool_calls": [{"id": "c1", "type": "function",
                         "function": {"name": "get_order", "arguments": '{"id":"ORD-1"}'}}]},
        {"role": "tool", "tool_call_id": "c1", "content": '{"status": "shipped"}'},
        {"role": "assistant", "content": "It shipped."},
    ]
    assert input_items(history) == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Where is ORD-1?"},
        {"type": "function_call", "call_id": "c1", "name": "get_order", "arguments": '{"id":"ORD-1"}'},
        {"type": "function_call_output", "call_id": "c1", "output": '{"status": "shipped"}'},
        {"role": "assistant", "content": "It shipped."},
    ]
    body = json.loads(Responses("dep", "/responses").body(history, TOOLS))
    assert body["store"] is False and body["stream"] is True and body["model"] == "dep"
    assert body["tools"] == [{"type": "function", "name": "get_order", "description": "Find an order.",
                              "parameters": TOOLS[0]["function"]["parameters"], "strict": False}]


async def test_a_lone_surrogate_goes_both_ways() -> None:
    """Valid JSON that orjson refuses: an answer echoing "\\ud800", and the next request carrying it."""
    events = await _events(b'data: {"choices": [{"delta": {"content": "x \\ud800"}, "finish_reason": "stop"}]}\n\n')
    items = [item async for item in ChatCompletions("m", "/c").read(_aiter(events))]
    assert items[0] == "x \ud800"
    history = [{"role": "assistant", "content": "x \ud800"}]
    assert json.loads(ChatCompletions("m", "/c").body(history, TOOLS))["messages"] == history
    assert json.loads(Responses("m", "/r").body(history, TOOLS))["input"] == history


async def _aiter(events: list[tuple[bytes, bytes]]) -> AsyncIterator[tuple[bytes, bytes]]:
    for event in events:
        yield event


def test_retry_after_reads_the_models_headers() -> None:
    assert retry_after({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5
    assert retry_after({"retry-after": "9"}) == 9.0
    assert retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0.0  # a date in the past
    assert retry_after({"retry-after": "soon"}) is None
    assert retry_after({"retry-after-ms": "x"}) is None
    assert retry_after({}) is None


async def _post(llm: ScriptedLLM, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as http, http.post(f"{llm.url}{path}", json=body) as resp:
        return resp.status, await resp.json() if resp.status != 200 else {}


async def test_scripted_responses_api_refuses_what_the_real_one_refuses(llm: ScriptedLLM) -> None:
    call = {"type": "function_call", "call_id": "c1", "name": "get_order", "arguments": "{}"}
    output = {"type": "function_call_output", "call_id": "c1", "output": "{}"}
    base = {"model": "m", "stream": True}
    good = await _post(llm, "/v1/responses", {**base, "input": [{"role": "user", "content": "hi"}, call, output]})
    assert good[0] == 200
    unanswered = await _post(llm, "/v1/responses", {**base, "input": [{"role": "user", "content": "hi"}, call]})
    assert unanswered[0] == 400 and "No tool output found for function call c1" in unanswered[1]["error"]["message"]
    unknown = await _post(llm, "/v1/responses", {**base, "input": [{"role": "user", "content": "hi"},
                                                                    {**output, "call_id": "nope"}]})
    assert unknown[0] == 400 and "call_id nope" in unknown[1]["error"]["message"]
    chat_tools = await _post(llm, "/v1/responses", {**base, "input": "hi", "tools": TOOLS})
    assert chat_tools[0] == 400 and chat_tools[1]["error"]["param"] == "tools[0].name"
    tool_role = await _post(llm, "/v1/responses", {**base, "input": [{"role": "tool", "content": "x"}]})
    assert tool_role[0] == 400
    assert len(llm.rejected) == 4
