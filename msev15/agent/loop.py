"""The tool-calling loop of one turn.

Stream the model's answer; when it asks for tools (parallel calls included) announce them, run
them concurrently, announce each result as it comes, send the results back and go round again,
up to ``max_rounds``. Every tool call gets a result (errors included), so history never holds a
call without its answer.

The loop records what it has done in a :class:`TurnProgress` the runner owns, so a turn that is
stopped half-way (cancel, interrupt, shutdown, model failure) can still commit the tool calls
that completed, each with its result, and nothing else.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any, Literal

from msev15.agent.providers.base import LLMError, ModelReply, Provider, ToolCallRequest
from msev15.agent.tools.handoff import HANDOFF_TOOL
from msev15.agent.tools.registry import ToolContext, ToolRegistry, ToolResult
from msev15.events.types import Token, ToolCalled, ToolFinished, TurnEvent, TurnRequested

TOO_MANY_ROUNDS = (
    "I'm sorry — this request needed more steps than I'm allowed to take in one turn, so I stopped "
    "here. Please split it into smaller requests or tell me which part to do first."
)

HANDOFF_NOTE = "I'm handing this conversation to a person on our support team. They will reply here."

Emit = Callable[[TurnEvent], None]


class TurnStopped(Exception):
    """The turn was asked to stop between steps (``progress.stop_reason`` says why)."""


class TurnProgress:
    """What a turn has done so far. ``steps`` holds only whole tool rounds (the assistant's call
    message and every result); ``pending`` the round whose tools are running now."""

    __slots__ = ("streamed", "steps", "usage", "phase", "stop_reason", "pending", "output_chars", "first_token_at",
                 "handoff")

    def __init__(self) -> None:
        self.streamed: list[str] = []
        self.steps: list[dict[str, Any]] = []
        self.usage: dict[str, int] | None = None
        self.phase: Literal["model", "tools", "commit"] = "model"
        self.stop_reason: str | None = None
        self.pending: tuple[tuple[ToolCallRequest, ...], dict[str, ToolResult], str | None] | None = None
        self.output_chars = 0  # text and tool-call arguments the model produced in this turn
        self.first_token_at: float | None = None  # time.monotonic() of the turn's first token
        self.handoff: dict[str, Any] | None = None  # the arguments of a successful handoff_to_human call

    @property
    def answer(self) -> str:
        return "".join(self.streamed)

    def completed_steps(self) -> list[dict[str, Any]]:
        """Whole rounds, plus the calls of a cut round that did finish (each with its result)."""
        if self.pending is None:
            return list(self.steps)
        calls, results, text = self.pending
        finished = [c for c in calls if c.id in results]
        if not finished:
            return list(self.steps)
        return [*self.steps, *_round_messages(text, finished, results)]


def _round_messages(text: str | None, calls: list[ToolCallRequest] | tuple[ToolCallRequest, ...],
                    results: dict[str, ToolResult]) -> list[dict[str, Any]]:
    call_message = {
        "role": "assistant",
        "content": text or None,
        "tool_calls": [{"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                       for c in calls],
    }
    return [call_message, *({"role": "tool", "tool_call_id": c.id, "content": results[c.id].content} for c in calls)]


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


def output_too_large(limit: int) -> LLMError:
    return LLMError("model_output_too_large",
                    f"The model's answer passed the limit of {limit} characters, so the turn was stopped. "
                    "Please ask for a shorter answer.", 502)


async def _model_round(provider: Provider, messages: list[dict[str, Any]], schemas: list[dict[str, Any]],
                       progress: TurnProgress, emit_token: Callable[[str], None] | None,
                       max_output_chars: int) -> ModelReply:
    """One model request. Past ``max_output_chars`` (over the whole turn) the stream is closed and
    the turn fails with ``model_output_too_large``: nothing of that size is kept or stored."""
    reply: ModelReply | None = None
    streamed = progress.streamed
    budget = max_output_chars - progress.output_chars
    stream = provider.stream(messages, schemas)
    try:
        async for item in stream:
            if isinstance(item, str):
                budget -= len(item)
                if budget < 0:
                    raise output_too_large(max_output_chars)
                if not streamed:
                    progress.first_token_at = time.monotonic()
                streamed.append(item)
                if emit_token is not None:
                    emit_token(item)
            else:
                reply = item
    finally:
        aclose = getattr(stream, "aclose", None)
        if aclose is not None:
            await aclose()
    assert reply is not None, "a provider must end its stream with a ModelReply"
    budget -= sum(len(call.arguments) for call in reply.tool_calls)
    if budget < 0:
        raise output_too_large(max_output_chars)
    progress.output_chars = max_output_chars - budget
    progress.usage = _add_usage(progress.usage, reply.usage)
    return reply


async def _tool_round(reply: ModelReply, registry: ToolRegistry, ctx: ToolContext, progress: TurnProgress,
                      emit: Emit, ids: tuple[str, str, str, str]) -> list[dict[str, Any]]:
    """Run the round's calls concurrently; its messages (call message, then results in call order)."""
    calls = reply.tool_calls
    results: dict[str, ToolResult] = {}
    progress.phase = "tools"
    progress.pending = (calls, results, reply.text)
    for call in calls:
        emit(ToolCalled(*ids, call.name, call.id, _arguments(call.arguments)))

    async def run(call: ToolCallRequest) -> None:
        result = await registry.call(call.name, call.arguments, ctx)
        results[call.id] = result
        error = None if result.ok else json.loads(result.content).get("error")
        emit(ToolFinished(*ids, call.name, call.id, result.ok, error))

    await asyncio.gather(*(run(call) for call in calls))
    progress.handoff = progress.handoff or next(
        (_arguments(c.arguments) for c in calls if c.name == HANDOFF_TOOL and results[c.id].ok), None)
    round_messages = _round_messages(reply.text, calls, results)
    progress.steps.extend(round_messages)
    progress.pending = None
    progress.phase = "model"
    down = next((r.unavailable for r in results.values() if r.unavailable is not None), None)
    if down is not None:  # the round is kept (with its results); the turn ends with a 503
        raise down
    return round_messages


async def run_turn(
    turn: TurnRequested,
    progress: TurnProgress,
    *,
    provider: Provider,
    registry: ToolRegistry,
    system_prompt: str,
    history: list[dict[str, Any]],
    max_rounds: int,
    emit: Emit,
    emit_tokens: bool = True,
    max_output_chars: int = 100_000,
) -> str:
    """Run one turn; returns the answer. ``emit_tokens=False`` skips token events (plain /chat).

    Raises :class:`TurnStopped` when ``progress.stop_reason`` is set between steps."""
    ids = (turn.turn_id, turn.tenant_id, turn.session_id, turn.request_id)
    ctx = ToolContext(turn.tenant_id, turn.session_id, turn.request_id)
    messages: list[dict[str, Any]] = [{"role": "system", "content": system_prompt}, *history,
                                      {"role": "user", "content": turn.message}]
    emit_token = (lambda text: emit(Token(*ids, text))) if emit_tokens else None

    for _ in range(max_rounds):
        if progress.stop_reason is not None:
            raise TurnStopped(progress.stop_reason)
        reply = await _model_round(provider, messages, registry.schemas(), progress, emit_token, max_output_chars)
        if not reply.tool_calls:
            return progress.answer
        messages.extend(await _tool_round(reply, registry, ctx, progress, emit, ids))
        if progress.handoff is not None:  # a person takes over: the model says nothing more
            if not progress.streamed:
                progress.streamed.append(HANDOFF_NOTE)
                if emit_token is not None:
                    emit_token(HANDOFF_NOTE)
            return progress.answer

    if progress.stop_reason is not None:
        raise TurnStopped(progress.stop_reason)
    # Out of rounds: tell the user plainly instead of failing the turn.
    streamed = progress.streamed
    tail = ("\n\n" if streamed and not streamed[-1].endswith((" ", "\n")) else "") + TOO_MANY_ROUNDS
    streamed.append(tail)
    if emit_token is not None:
        emit_token(tail)
    return progress.answer
