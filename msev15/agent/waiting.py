"""Turns that wait for a person or the client: pausing a turn, and settling its waiting calls.

Which calls wait: those of a client's own tools (their output comes from the client) and those
whose tool name matches a TOOL_APPROVAL pattern (``fnmatch``). A turn that pauses stores what it
did as a :class:`~msev15.store.pending.PausedTurn` (store/pending.py) and commits nothing: its
calls and their results reach the history together when the step is settled, so the history is
valid for both model APIs at every moment.

Settling a step (exactly one caller does it: the one that took it from the store) answers every
waiting call in the model's order: an approved call runs now (so exactly once), a rejected one
gets a result saying a person declined it and why, a client tool gets the client's output. Calls
still undecided get the settling reason (``superseded`` by a new message, ``expired`` after
PENDING_TIMEOUT_SECONDS, ``cancelled``). A continuation turn settles its step and goes on with
the model; the others commit the settled step with a short note.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from fnmatch import fnmatchcase
from typing import Any, Final

from msev15.agent.loop import Emit, Paused, TurnProgress, Waits, never_waits, round_messages
from msev15.agent.providers.base import ToolCallRequest
from msev15.agent.tools.registry import ToolContext, ToolRegistry, ToolResult
from msev15.events.types import CallSettled, ClientTool, ToolFinished, TurnEvent, TurnRequested
from msev15.store.base import Sessions, StoreUnavailable, storable
from msev15.store.pending import PausedTurn, PendingCalls

log = logging.getLogger("agent.waiting")

NOT_RUN: Final[dict[str, str]] = {
    "superseded": "This call was not run: the customer sent a new message before it was decided.",
    "expired": "This call was not run: no decision came before it expired.",
    "cancelled": "This call was not run: it was cancelled while it waited for a decision.",
}
NOTES: Final[dict[str, str]] = {
    "superseded": "(A new message came before the calls above were decided; the undecided ones were not run.)",
    "expired": "(No decision came in time for the calls above; the undecided ones were not run.)",
    "cancelled": "(This turn was cancelled while it waited; the calls above that were not approved were not run.)",
}
SWEEP_SECONDS: Final = 60.0
STALL_SECONDS: Final = 60.0  # a decided step nobody took for this long lost its continuation


# Starts a continuation turn of a paused step (the runner's): its turn id, or None when the
# session has a turn open already (that turn settles the step) or the runner refused it.
Continue = Callable[[str, str, str, tuple[ClientTool, ...]], Awaitable[str | None]]


class NothingToResume(Exception):
    """A continuation found no paused step: another caller settled it first (a new message, a cancel)."""


def _quiet(event: TurnEvent) -> None:
    return None


def _answer(kind: str, decision: dict[str, Any] | None, reason: str) -> ToolResult:
    """The result the model reads for a call that was not run here (never an approved one)."""
    if kind == "client_tool":
        if decision is None:
            return ToolResult(False, json.dumps({"error": f"The client returned no result for this call ({reason})."}))
        output = decision["output"]
        return ToolResult(True, output if isinstance(output, str) else json.dumps(output))
    if decision is None or decision.get("approve") is True:  # undecided, or approved but cancelled
        return ToolResult(False, json.dumps({"declined": True, "reason": reason, "message": NOT_RUN[reason]}))
    return ToolResult(False, json.dumps({"declined": True, "reason": decision.get("reason") or "declined",
                                         "message": "A person declined this call; it was not run."}))


def _outcome(kind: str, decision: dict[str, Any] | None, reason: str, paused: PausedTurn) -> tuple[str, float | None]:
    """(outcome, seconds waited for the decision) of one settled call."""
    if decision is None:
        return reason, None
    waited = max(0.0, float(decision.get("decided_at", paused.requested_at)) - paused.requested_at)
    if kind == "client_tool":
        return "output", waited
    if decision.get("approve") is True:
        return ("approved" if reason != "cancelled" else "cancelled"), waited
    return "rejected", waited


# The tools a tenant's turns run now (its profile's, else the service's): the one resolution
# (agent/profile_turn.py TurnProfiles.tools_for) every path that runs an approved call uses.
ToolsFor = Callable[[str], Awaitable[ToolRegistry]]


class Waiting:
    def __init__(self, pending: PendingCalls, sessions: Sessions, tools_for: ToolsFor, *,
                 approval: tuple[str, ...] = (), timeout_seconds: float = 86_400,
                 clock: Callable[[], float] = time.time, publish: Emit = _quiet,
                 continuation: Continue | None = None) -> None:
        self.pending = pending
        self.continuation = continuation
        self.publish = publish  # the bus: each settled call is announced once (metrics, logs)
        self.sessions = sessions
        self.tools_for = tools_for
        self.approval = approval
        self.timeout_seconds = timeout_seconds
        self.clock = clock
        self._sweeper: asyncio.Task[None] | None = None

    # --- which calls wait -------------------------------------------------------------------

    def waits_for(self, turn: TurnRequested, approval: tuple[str, ...] | None = None,
                  allowed: Callable[[str], bool] | None = None) -> Waits:
        """Which calls of ``turn`` wait. A tenant's profile passes its ``approval`` patterns (instead
        of TOOL_APPROVAL) and its tool filter: a client tool it does not allow never waits (the
        turn's registry refuses the call)."""
        client = frozenset(tool.name for tool in turn.tools if allowed is None or allowed(tool.name))
        patterns = self.approval if approval is None else approval
        if not client and not patterns:
            return never_waits

        def waits(name: str) -> str | None:
            if name in client:
                return "client_tool"
            return "approval" if any(fnmatchcase(name, p) for p in patterns) else None

        return waits

    @staticmethod
    def client_schemas(turn: TurnRequested, allowed: Callable[[str], bool] | None = None) -> list[dict[str, Any]]:
        return [{"type": "function", "function": {"name": t.name, "description": t.description,
                                                  "parameters": t.parameters}}
                for t in turn.tools if allowed is None or allowed(t.name)]

    # --- pausing and resuming ---------------------------------------------------------------

    async def pause(self, turn: TurnRequested, progress: TurnProgress, step: Paused, user_text: str,
                    started_at: float) -> PausedTurn:
        now = self.clock()
        paused = PausedTurn(
            turn.tenant_id, turn.session_id, turn.turn_id, user_text, started_at, now, now + self.timeout_seconds,
            steps=storable(list(progress.steps)), text=storable(step.text), streamed=storable(list(progress.streamed)),
            calls=storable([{"id": c.id, "name": c.name, "arguments": c.arguments} for c in step.calls]),
            results={cid: {"ok": r.ok, "content": storable(r.content)} for cid, r in step.results.items()},
            waiting=[{"call_id": call.id, "kind": kind} for call, kind in step.waiting],
            tools=[asdict(tool) for tool in turn.tools])
        await self.pending.pause(paused)
        return paused

    async def resume(self, turn: TurnRequested, progress: TurnProgress, emit: Emit,
                     registry: ToolRegistry | None = None, *, unpaused: bool = False) -> PausedTurn | None:
        """Before a turn's model call. A continuation takes its paused step, settles it and returns
        it (its rounds and settled step are now in ``progress``); a new message first settles any
        step the session still waits on (``superseded``) and returns None. Approved calls run in
        ``registry`` (the turn's tools under its tenant's profile), else the tenant's tools now. With
        ``unpaused`` the caller knows the session has no paused step (the coordination's admission
        told it): a new message skips the look-up."""
        if turn.resumes is None:
            if not unpaused and await self.pending.get(turn.tenant_id, turn.session_id) is not None:
                await self.close(turn.tenant_id, turn.session_id, None, "superseded", turn.request_id, emit,
                                 registry=registry)
            return None
        paused = await self.pending.take(turn.tenant_id, turn.session_id, turn.resumes)
        if paused is None:
            raise NothingToResume(turn.resumes)
        progress.phase = "tools"  # a stop now lets the approved calls finish, then ends the turn
        settled = await self.settle(paused, turn.request_id, emit, turn.turn_id, "superseded", registry)
        progress.phase = "model"
        progress.steps.extend([*paused.steps, *settled])
        progress.streamed.extend(paused.streamed)
        return paused

    async def settle(self, paused: PausedTurn, request_id: str, emit: Emit, turn_id: str,
                     reason: str, registry: ToolRegistry | None = None) -> list[dict[str, Any]]:
        """Answer every waiting call (approved ones run now, in ``registry`` when the caller has
        the turn's tools, else in the tenant's tools resolved now: never the service's registry,
        which lacks the tenant's MCP tools and ignores its profile's deny list); the step's
        messages, in call order."""
        ids = (turn_id, paused.tenant_id, paused.session_id, request_id)
        ctx = ToolContext(paused.tenant_id, paused.session_id, request_id)
        results = {cid: ToolResult(r["ok"], r["content"]) for cid, r in paused.results.items()}
        approved: list[dict[str, str]] = []
        for waiting in paused.waiting:
            call_id, kind = waiting["call_id"], waiting["kind"]
            decision = paused.decisions.get(call_id)
            call = paused.call(call_id)
            self.publish(CallSettled(*ids, call["name"], kind, *_outcome(kind, decision, reason, paused)))
            # A cancel runs nothing: an approved call whose continuation was cancelled is not run either.
            if kind == "approval" and decision is not None and decision.get("approve") is True \
                    and reason != "cancelled":
                approved.append(call)
                continue
            result = results[call_id] = _answer(kind, decision, reason)
            emit(ToolFinished(*ids, call["name"], call_id, result.ok, None if result.ok else "not_run"))

        if approved:
            tools = registry if registry is not None else await self.tools_for(paused.tenant_id)

            async def run(call: dict[str, str]) -> None:
                result = results[call["id"]] = await tools.call(call["name"], call["arguments"], ctx)
                error = None if result.ok else json.loads(result.content).get("error")
                emit(ToolFinished(*ids, call["name"], call["id"], result.ok, error))

            await asyncio.gather(*(run(call) for call in approved))
        calls = [ToolCallRequest(c["id"], c["name"], c["arguments"]) for c in paused.calls]
        settled: list[dict[str, Any]] = storable(round_messages(paused.text, calls, results))
        return settled

    async def close(self, tenant_id: str, session_id: str, turn_id: str | None, reason: str,
                    request_id: str = "-", emit: Emit = _quiet, *, registry: ToolRegistry | None = None) -> bool:
        """Settle the session's paused step for ``reason`` and commit it with a note; False if
        there was none (or it was another turn's) by the time it was taken. The tenant's tools are
        resolved before the step is taken (a cancel runs nothing and needs none): if that fails
        (its profile store is down), the step stays in the store for the next try."""
        if registry is None and reason != "cancelled":
            registry = await self.tools_for(tenant_id)
        paused = await self.pending.take(tenant_id, session_id, turn_id)
        if paused is None:
            return False
        settled = await self.settle(paused, request_id, emit, paused.turn_id, reason, registry)
        said = "".join(paused.streamed)
        note = f"{said}\n\n{NOTES[reason]}" if said else NOTES[reason]
        await self.sessions.commit_turn(tenant_id, session_id, paused.user_message, paused.started_at,
                                        [*paused.steps, *settled], storable(note))
        log.info("waiting calls of turn %s settled: %s", paused.turn_id, reason)
        return True

    # --- expiry -----------------------------------------------------------------------------

    async def expire(self, now: float | None = None) -> int:
        """Settle every paused step past its expiry (``expired``); how many were. The sweep calls
        it every minute; tests call it with a ``now`` in the future instead of waiting."""
        closed = 0
        for tenant_id, session_id, turn_id in await self.pending.due(self.clock() if now is None else now):
            if await self.close(tenant_id, session_id, turn_id, "expired"):
                closed += 1
        return closed

    async def recover(self, now: float | None = None) -> list[str]:
        """Start the continuation of every decided step nobody took for STALL_SECONDS: its turn
        was lost (cut while queued at a shutdown, or its instance died before running it). The
        ids of the turns started. A step whose session has a turn open is left to that turn."""
        if self.continuation is None:
            return []
        started = []
        before = (self.clock() if now is None else now) - STALL_SECONDS
        for tenant_id, session_id, turn_id in await self.pending.stalled(before):
            paused = await self.pending.get(tenant_id, session_id)
            if paused is None or paused.turn_id != turn_id:
                continue
            tools = tuple(ClientTool(t["name"], t["description"], t["parameters"]) for t in paused.tools)
            if (continued := await self.continuation(tenant_id, session_id, turn_id, tools)) is not None:
                log.info("decided calls of turn %s had lost their continuation; continuing in turn %s",
                         turn_id, continued)
                started.append(continued)
        return started

    def start(self) -> None:
        self._sweeper = asyncio.create_task(self._sweep(), name="agent:pending-sweep")

    async def _sweep(self) -> None:
        """At start (a restart finds the continuations it lost) and then every interval."""
        interval = min(SWEEP_SECONDS, max(1.0, self.timeout_seconds / 10))
        while True:
            try:
                await self.recover()
                await self.expire()
            except StoreUnavailable as exc:  # the store is down: the next round tries again
                log.warning("could not sweep the waiting calls: %s", exc)
            except Exception:
                log.exception("could not settle expired or stalled waiting calls")
            await asyncio.sleep(interval)

    async def close_sweeper(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
