"""The Responses API half of the scripted server: what it refuses, and its streamed events.

Event and error shapes follow OpenAI's Responses API (``POST /v1/responses`` with ``stream``):
``response.created``, ``response.output_item.added``, ``response.output_text.delta``,
``response.function_call_arguments.delta`` / ``.done``, ``response.output_item.done`` and
``response.completed`` carrying the usage.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tests.llm_server import Reply

ROLES = ("assistant", "system", "developer", "user")


def input_problem(body: dict[str, Any]) -> tuple[str, str] | None:
    """Why the real Responses API would refuse this request (400), as (message, param), or None.

    Without ``previous_response_id`` every ``function_call`` in ``input`` needs a later
    ``function_call_output`` with its ``call_id``, and every output needs an earlier call."""
    if not body.get("model"):
        return "Missing required parameter: 'model'.", "model"
    items = body.get("input")
    if not isinstance(items, list | str):
        return "Missing required parameter: 'input'.", "input"
    for index, tool in enumerate(body.get("tools") or ()):
        if tool.get("type") == "function" and not tool.get("name"):
            return f"Missing required parameter: 'tools[{index}].name'.", f"tools[{index}].name"
    if isinstance(items, str):
        return None
    calls: list[str] = []
    answered: set[str] = set()
    for index, item in enumerate(items):
        kind = item.get("type", "message")
        if kind == "message":
            if item.get("role") not in ROLES:
                invalid = (f"Invalid value: '{item.get('role')}'. Supported values are: 'assistant', 'system', "
                           "'developer', and 'user'.")
                return invalid, f"input[{index}].role"
        elif kind == "function_call":
            calls.append(item.get("call_id") or "")
        elif kind == "function_call_output":
            if item.get("call_id") not in calls:
                missing = f"No tool call found for function call output with call_id {item.get('call_id')}."
                return missing, "input"
            answered.add(item["call_id"])
        else:
            return f"Invalid value: '{kind}'.", f"input[{index}].type"
    if not body.get("previous_response_id"):
        for call_id in calls:
            if call_id not in answered:
                return f"No tool output found for function call {call_id}.", "input"
    return None


def _event(kind: str, seq: int, **fields: Any) -> bytes:
    data = json.dumps({"type": kind, "sequence_number": seq, **fields})
    return f"event: {kind}\ndata: {data}\n\n".encode()


def _call_item(index: int, call: Any, arguments: str, status: str) -> dict[str, Any]:
    call_id = call.id or f"call_{index}"
    return {"id": f"fc_{index}", "type": "function_call", "status": status, "call_id": call_id,
            "name": call.name, "arguments": arguments}


def response_frames(body: dict[str, Any], reply: Reply) -> list[bytes]:
    """Every SSE frame of one streamed response, in order."""
    model: str = reply.model or str(body.get("model", "scripted"))
    base = {"id": "resp_1", "object": "response", "created_at": int(time.time()), "model": model,
            "status": "in_progress", "output": [], "usage": None}
    frames = [_event("response.created", 0, response=base), _event("response.in_progress", 1, response=base)]
    output: list[dict[str, Any]] = []
    seq = 2
    if reply.text:
        message = {"id": "msg_1", "type": "message", "status": "in_progress", "role": "assistant", "content": []}
        frames.append(_event("response.output_item.added", seq, output_index=0, item=message))
        frames.append(_event("response.content_part.added", seq + 1, item_id="msg_1", output_index=0, content_index=0,
                             part={"type": "output_text", "text": "", "annotations": []}))
        seq += 2
        pieces = reply.text.split(" ") if reply.chunk_words else [reply.text]
        for i, piece in enumerate(pieces):
            delta = piece + (" " if i < len(pieces) - 1 else "")
            frames.append(_event("response.output_text.delta", seq, item_id="msg_1", output_index=0,
                                 content_index=0, delta=delta, logprobs=[]))
            seq += 1
        part = {"type": "output_text", "text": reply.text, "annotations": []}
        frames.append(_event("response.output_text.done", seq, item_id="msg_1", output_index=0, content_index=0,
                             text=reply.text, logprobs=[]))
        frames.append(_event("response.content_part.done", seq + 1, item_id="msg_1", output_index=0,
                             content_index=0, part=part))
        done = {**message, "status": "completed", "content": [part]}
        frames.append(_event("response.output_item.done", seq + 2, output_index=0, item=done))
        output.append(done)
        seq += 3
    for index, call in enumerate(reply.tool_calls):
        out_index = len(output)
        args = call.arguments if isinstance(call.arguments, str) else json.dumps(call.arguments)
        frames.append(_event("response.output_item.added", seq, output_index=out_index,
                             item=_call_item(index, call, "", "in_progress")))
        half = len(args) // 2
        for piece in (args[:half], args[half:]):  # arguments arrive in pieces, as real models send them
            seq += 1
            frames.append(_event("response.function_call_arguments.delta", seq, item_id=f"fc_{index}",
                                 output_index=out_index, delta=piece))
        item = _call_item(index, call, args, "completed")
        frames.append(_event("response.function_call_arguments.done", seq + 1, item_id=f"fc_{index}",
                             output_index=out_index, name=call.name, arguments=args))
        frames.append(_event("response.output_item.done", seq + 2, output_index=out_index, item=item))
        output.append(item)
        seq += 3
    words = len(reply.text.split(" ")) if reply.text else 0
    output_tokens = words + 2 * len(reply.tool_calls)
    usage = {"input_tokens": 11, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": output_tokens,
             "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 11 + output_tokens}
    frames.append(_event("response.completed", seq, response={**base, "status": "completed", "output": output,
                                                                 "usage": usage}))
    return frames


def error_frames(message: str) -> list[bytes]:
    """A stream that fails after it started, as the API reports it (a ``response.failed`` event)."""
    failed = {"id": "resp_1", "object": "response", "status": "failed", "output": [],
              "error": {"code": "server_error", "message": message}}
    return [_event("response.created", 0, response={**failed, "status": "in_progress", "error": None}),
            _event("response.failed", 1, response=failed)]
