"""The tool-calling loop of one turn.

Stream the model's answer; when it asks for tools (parallel calls included) announce them, run
them concurrently, announce each result as it comes, send the results back and go round again,
up to ``max_rounds``. Every tool call gets a result (errors included), so history never holds a
call without its answer.

A call that must wait (it needs a person's approval, or it is a client's tool) is announced but
not run: the calls of that step that need nothing run as usual, and the loop returns a
:class:`Paused` instead of an answer (the turn's execution stores it; agent/waiting.py).

The loop records what it has done in a :class:`TurnProgress` the runner owns, so a turn that is
stopped half-way (cancel, interrupt, shutdown, model failure) can still commit the tool calls
that completed, each with its result, and nothing else.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
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
Waits = Callable[[str], str | None]  # a tool name -> why its calls wait ("approval", "client_tool") or None


def never_waits(name: str) -> None:
    return None


@dataclass(slots=True)
class Paused:
    """The step the turn stopped at: every call of it, the results of those that ran, and the
    calls that wait, each with its kind."""

    text: str | None
    calls: tuple[ToolCallRequest, ...]
    results: dict[str, ToolResult]
    waiting: list[tuple[ToolCallRequest, str]]


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
        # "starting" until the turn's task first runs: a stop then is noticed by the task itself
        # (a task cancelled before its first step would never run the code that ends the turn).
        self.phase: Literal["starting", "model", "tools", "commit"] = "starting"
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
        return [*self.steps, *round_messages(text, finished, results)]


def round_messages(text: str | None, calls: list[ToolCallRequest] | tuple[ToolCallRequest, ...],
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
                      emit: Emit, ids: tuple[str, str, str, str], waits: Waits) -> list[dict[str, Any]] | Paused:
    """Run the round's calls concurrently; its messages (call message, then results in call order),
    or, when some of its calls wait, the :class:`Paused` step (the others have run)."""
    calls = reply.tool_calls
    results: dict[str, ToolResult] = {}
    progress.phase = "tools"
    progress.pending = (calls, results, reply.text)
    waiting = [(call, kind) for call in calls if (kind := waits(call.name)) is not None]
    for call in calls:
        emit(ToolCalled(*ids, call.name, call.id, _arguments(call.arguments)))

    async def run(call: ToolCallRequest) -> None:
        result = await registry.call(call.name, call.arguments, ctx)
        results[call.id] = result
        error = None if result.ok else json.loads(result.content).get("error")
        emit(ToolFinished(*ids, call.name, call.id, result.ok, error))

    waits_ids = {call.id for call, _ in waiting}
    await asyncio.gather(*(run(call) for call in calls if call.id not in waits_ids))
    if waiting and not any(r.unavailable for r in results.values()):
        progress.phase = "model"
        return Paused(reply.text, calls, results, waiting)
    if waiting:  # a store is down: the turn fails, keeping the calls that ran (see completed_steps)
        raise next(r.unavailable for r in results.values() if r.unavailable is not None)
    progress.handoff = progress.handoff or next(
        (_arguments(c.arguments) for c in calls if c.name == HANDOFF_TOOL and results[c.id].ok), None)
    step = round_messages(reply.text, calls, results)
    progress.steps.extend(step)
    progress.pending = None
    progress.phase = "model"
    down = next((r.unavailable for r in results.values() if r.unavailable is not None), None)
    if down is not None:  # the round is kept (with its results); the turn ends with a 503
        raise down
    return step


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
    waits: Waits = never_waits,
    client_schemas: list[dict[str, Any]] | None = None,
    user_text: str | None = None,
    resumed: list[dict[str, Any]] | None = None,
) -> str | Paused:
    """Run one turn; returns the answer, or the step it paused at. ``emit_tokens=False`` skips
    token events (plain /chat). A continuation passes the paused turn's ``user_text`` and the
    ``resumed`` messages after it (its earlier rounds and the settled step, already in
    ``progress.steps``); ``client_schemas`` are the caller's own tools, offered beside ours.

    Raises :class:`TurnStopped` when ``progress.stop_reason`` is set between steps."""
    ids = (turn.turn_id, turn.tenant_id, turn.session_id, turn.request_id)
    ctx = ToolContext(turn.tenant_id, turn.session_id, turn.request_id)
    messages: list[dict[str, Any]] = [{"role": "system", "content": system_prompt}, *history,
                                      {"role": "user", "content": turn.message if user_text is None else user_text},
                                      *(resumed or ())]
    emit_token = (lambda text: emit(Token(*ids, text))) if emit_tokens else None

    for _ in range(max_rounds):
        if progress.stop_reason is not None:
            raise TurnStopped(progress.stop_reason)
        schemas = registry.schemas() if not client_schemas else [*registry.schemas(), *client_schemas]
        reply = await _model_round(provider, messages, schemas, progress, emit_token, max_output_chars)
        if not reply.tool_calls:
            return progress.answer
        step = await _tool_round(reply, registry, ctx, progress, emit, ids, waits)
        if isinstance(step, Paused):
            if progress.stop_reason is not None:
                raise TurnStopped(progress.stop_reason)
            return step
        messages.extend(step)
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
