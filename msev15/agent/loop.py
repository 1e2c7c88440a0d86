"""The tool-calling loop of one turn.

Stream the model's answer; when it asks for tools (parallel calls included) announce them, run
them concurrently, announce their results, send the results back and go round again, up to
``max_rounds``. Every tool call gets a result (errors included), so history never holds a call
without its answer.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from msev15.agent.providers.base import ModelReply, Provider
from msev15.agent.tools.registry import ToolContext, ToolRegistry
from msev15.events.types import (
    Token,
    ToolCalled,
    ToolFinished,
    TurnEvent,
    TurnRequested,
)

TOO_MANY_ROUNDS = (
    "I'm sorry — this request needed more steps than I'm allowed to take in one turn, so I stopped "
    "here. Please split it into smaller requests or tell me which part to do first."
)


@dataclass(frozen=True, slots=True)
class TurnOutcome:
    answer: str
    steps: list[dict[str, Any]]  # assistant tool-call messages and tool results, in order
    usage: dict[str, int] | None


def _arguments(raw: str) -> Any:
    try:
        return json.loads(raw or "{}")
    except ValueError:
        return raw


def _add_usage(total: dict[str, int] | None, more: dict[str, int] | None) -> dict[str, int] | None:
    if more is None:
        return total
    if total is None:
        return dict(more)
    return {k: total.get(k, 0) + v for k, v in more.items()}


async def run_turn(
    turn: TurnRequested,
    *,
    provider: Provider,
    registry: ToolRegistry,
    system_prompt: str,
    history: list[dict[str, Any]],
    max_rounds: int,
    publish: Callable[[TurnEvent], None],
    publish_tokens: bool = True,
) -> TurnOutcome:
    """Run one turn. ``publish_tokens=False`` skips token events nobody listens to (plain /chat)."""
    ids = (turn.turn_id, turn.tenant_id, turn.session_id, turn.request_id)
    ctx = ToolContext(turn.tenant_id, turn.session_id, turn.request_id)
    messages: list[dict[str, Any]] = [{"role": "system", "content": system_prompt}, *history,
                                      {"role": "user", "content": turn.message}]
    steps: list[dict[str, Any]] = []
    streamed: list[str] = []
    usage: dict[str, int] | None = None

    for _ in range(max_rounds):
        schemas = registry.schemas()
        reply: ModelReply | None = None
        async for item in provider.stream(messages, schemas):
            if type(item) is str:
                streamed.append(item)
                if publish_tokens:
                    publish(Token(*ids, item))
            else:
                reply = item
        assert reply is not None, "a provider must end its stream with a ModelReply"
        usage = _add_usage(usage, reply.usage)
        if not reply.tool_calls:
            return TurnOutcome("".join(streamed), steps, usage)

        call_message = {
            "role": "assistant",
            "content": reply.text or None,
            "tool_calls": [
                {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                for c in reply.tool_calls
            ],
        }
        messages.append(call_message)
        steps.append(call_message)
        for call in reply.tool_calls:
            publish(ToolCalled(*ids, call.name, call.id, _arguments(call.arguments)))
        results = await asyncio.gather(*(registry.call(c.name, c.arguments, ctx) for c in reply.tool_calls))
        for call, result in zip(reply.tool_calls, results, strict=True):
            error = None if result.ok else json.loads(result.content).get("error")
            publish(ToolFinished(*ids, call.name, call.id, result.ok, error))
            tool_message = {"role": "tool", "tool_call_id": call.id, "content": result.content}
            messages.append(tool_message)
            steps.append(tool_message)

    # Out of rounds: tell the user plainly instead of failing the turn.
    tail = ("\n\n" if streamed and not streamed[-1].endswith((" ", "\n")) else "") + TOO_MANY_ROUNDS
    streamed.append(tail)
    if publish_tokens:
        publish(Token(*ids, tail))
    return TurnOutcome("".join(streamed), steps, usage)
