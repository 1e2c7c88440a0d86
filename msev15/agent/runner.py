"""The agent runner: the one owner of turn intake, scheduling, stopping and shutdown. Running an
admitted turn is :mod:`msev15.agent.execution`'s.

It takes ``TurnRequested`` straight from ``bus.publish`` (a synchronous bus handler), so a turn is
accepted, refused (shutting down, session busy, tenant queue full) or queued before the handler's
``publish`` returns. Queued turns are started by the fair scheduler (tenants → sessions → turns;
one turn per session at a time, in arrival order). Every turn gets a record in the turn log and
ends with exactly one terminal event, whatever happens.

Stopping a turn (cancel, interrupt, the shutdown deadline): a queued turn is taken out and ends at
once; a running turn whose model is streaming is cancelled at once; one whose tools are running
lets them finish (each bounded by its timeout) and stops before the model sees their results,
except at the shutdown deadline, which cancels everything. A stopped turn commits the tool calls
that completed, with their results and a short note (or nothing, if none did), so the session's
history stays valid for every provider.

Shutdown has one deadline: ``begin_shutdown(timeout)`` refuses new turns and arms it; turns that
are queued or running may finish until then; at the deadline the rest are cut (``shutting_down``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Final

from msev15.agent.coordination import Coordination
from msev15.agent.execution import STOP_MESSAGES, TurnExecution
from msev15.agent.loop import TurnProgress
from msev15.agent.profile_turn import TurnProfiles
from msev15.agent.providers.base import Provider
from msev15.agent.scheduler import FairScheduler, QueueFull, SessionKey
from msev15.agent.tools.registry import ToolRegistry
from msev15.agent.waiting import Waiting
from msev15.common.ids import new_id
from msev15.events.bus import EventBus
from msev15.events.turnlog import TurnLog, TurnRecord
from msev15.events.types import ClientTool, TurnCompleted, TurnEvent, TurnFailed, TurnRequested
from msev15.store.base import Sessions
from msev15.store.handoffs import Handoffs
from msev15.store.pending import MemoryPendingCalls, PendingCalls
from msev15.store.session_events import SessionEvents

log = logging.getLogger("agent.runner")

RETRY_SOON: Final = {"store_unavailable": 5, "turn_lost": 2}  # Retry-After of these 503s (seconds)


class TurnRefused(Exception):
    """The runner did not accept the turn: ``code`` and ``status`` for the client's envelope."""

    def __init__(self, code: str, message: str, status: int, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status
        self.retry_after = retry_after


class _Running:
    __slots__ = ("task", "progress", "key")

    def __init__(self, task: asyncio.Task[None], progress: TurnProgress, key: SessionKey) -> None:
        self.task = task
        self.progress = progress
        self.key = key


TASK_PREFIX: Final = "agent:turn:"  # a turn's task is named by its turn id: its done callback needs no closure


class AgentRunner:
    def __init__(
        self,
        bus: EventBus,
        turns: TurnLog,
        sessions: Sessions,
        provider: Provider,
        registry: ToolRegistry,
        coordination: Coordination,
        *,
        system_prompt: str,
        max_concurrent: int = 100,
        max_concurrent_per_tenant: int | None = None,
        max_queued_per_tenant: int = 100,
        max_rounds: int = 8,
        context_messages: int = 40,
        context_max_chars: int = 200_000,
        max_output_chars: int = 100_000,
        busy_retry_after: int = 2,
        pending: PendingCalls | None = None,
        tool_approval: tuple[str, ...] = (),
        pending_timeout_seconds: float = 86_400,
        handoffs: Handoffs | None = None,
        session_events: SessionEvents | None = None,
        profiles: TurnProfiles | None = None,
    ) -> None:
        self.bus = bus
        self.turns = turns
        self.busy_retry_after = busy_retry_after
        # Each tenant's profile (issue 25); without a store, the service's defaults. The waiting
        # calls settle with the same tools the tenant's turns get.
        profiles = profiles if profiles is not None else TurnProfiles(None, registry, system_prompt)
        self.waiting = Waiting(pending or MemoryPendingCalls(), sessions, profiles.tools_for, approval=tool_approval,
                               timeout_seconds=pending_timeout_seconds, publish=bus.publish,
                               continuation=self.continue_paused)
        self.execution = TurnExecution(self, sessions, provider, registry, coordination, self.waiting,
                                       system_prompt=system_prompt, max_rounds=max_rounds,
                                       context_messages=context_messages, context_max_chars=context_max_chars,
                                       max_output_chars=max_output_chars, handoffs=handoffs,
                                       session_events=session_events, profiles=profiles)
        per_tenant = max_concurrent_per_tenant or max(1, max_concurrent // 4)
        self._queue: FairScheduler[TurnRequested] = FairScheduler(max_concurrent, per_tenant, max_queued_per_tenant)
        self._open: dict[str, TurnRecord] = {}  # every turn not ended yet, queued or running
        self._running: dict[str, _Running] = {}
        self._running_of: dict[SessionKey, TurnRecord] = {}  # each busy session's running turn
        self._accepted_at: dict[str, float] = {}  # time.monotonic() of each open turn's acceptance
        self._idle = asyncio.Event()
        self._idle.set()
        self._cut_timer: asyncio.TimerHandle | None = None
        self.accepting = True
        self._stopping = asyncio.Event()  # set when shutdown begins (begin_shutdown)
        self._coordination = coordination
        self.completed = 0
        self.cut_turns = 0  # turns ended by the shutdown deadline
        bus.on(TurnRequested, self.accept)

    def start(self) -> None:
        """Bind to the coordination (it stops this instance's turns for cancels from anywhere) and
        start the sweep of expired waiting calls."""
        self._coordination.start(self)
        self.waiting.start()

    # --- intake ---------------------------------------------------------------------------

    @property
    def open_turns(self) -> int:
        return len(self._open)

    @property
    def running(self) -> int:
        return self._queue.running

    @property
    def queued(self) -> int:
        return self._queue.queued

    def accept(self, turn: TurnRequested) -> None:
        """The bus handler for TurnRequested. Raises TurnRefused; otherwise the turn is queued."""
        if not self.accepting:
            raise TurnRefused("shutting_down", "The service is shutting down and accepts no new messages.",
                              503, retry_after=5)
        key = (turn.tenant_id, turn.session_id)
        if turn.if_busy == "reject" and self._queue.busy(key):
            raise TurnRefused("session_busy", "This session is still answering an earlier message.", 409,
                              retry_after=self.busy_retry_after)
        if turn.if_busy == "interrupt":
            self.stop_session(key, "interrupted")
        try:
            self._queue.push(key, turn)
        except QueueFull:
            raise TurnRefused("tenant_busy", "Too many messages are waiting for this tenant; retry shortly.",
                              429, retry_after=self.busy_retry_after) from None
        self._open[turn.turn_id] = self.turns.open(turn)
        self._accepted_at[turn.turn_id] = time.monotonic()
        self._idle.clear()
        self._pump()

    async def continue_paused(self, tenant_id: str, session_id: str, paused_turn_id: str,
                              tools: tuple[ClientTool, ...]) -> str | None:
        """Start the continuation of a decided step whose own continuation was lost (the pending
        sweep calls it); None when the session has a turn open (it settles the step) or the turn
        is refused (shutting down: the next start tries again)."""
        coordination = self._coordination
        if not self.accepting or await coordination.session_turn(tenant_id, session_id) is not None:
            return None
        turn = TurnRequested(new_id(), tenant_id, session_id, new_id(), "", True, "enqueue", paused_turn_id, tools)
        try:
            await coordination.admit(turn)
        except TurnRefused:
            return None
        try:
            self.bus.publish(turn)
        except TurnRefused:
            await coordination.withdraw(turn)
            return None
        return turn.turn_id

    def _pump(self) -> None:
        while (ready := self._queue.next()) is not None:
            key, turn = ready
            record = self._open[turn.turn_id]
            self.turns.started(record)
            self._running_of[key] = record
            progress = TurnProgress()
            task = asyncio.create_task(self.execution.run(turn, record, progress), name=TASK_PREFIX + turn.turn_id)
            self._running[turn.turn_id] = _Running(task, progress, key)
            task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        turn_id = task.get_name().removeprefix(TASK_PREFIX)
        running = self._running.pop(turn_id)
        key = running.key
        del self._running_of[key]
        self._queue.done(key)
        if not task.cancelled() and task.exception() is not None:  # the execution ends every turn itself
            log.error("turn task failed", exc_info=task.exception())
        record = self._open.get(turn_id)
        if record is not None and not record.finished:
            # Cancelled before its first step (the shutdown deadline's hard stop): the execution
            # never ran, so nothing ended the turn. Its readers still get their one end.
            reason = running.progress.stop_reason or "shutting_down"
            message, status = STOP_MESSAGES[reason]
            self.fail(record, reason, message, status)
        self._pump()

    # --- ending a turn (called by the turn's execution) ---------------------------------------

    def emit(self, record: TurnRecord, event: TurnEvent) -> None:
        """Log first, then fan out: a reader that finds the log has all a subscriber saw."""
        self.turns.append(record, event)
        self.bus.publish(event)

    def is_open(self, turn_id: str) -> bool:
        return turn_id in self._open

    def complete(self, turn: TurnRequested, record: TurnRecord, answer: str, count: int,
                 usage: dict[str, int] | None, pending: tuple[dict[str, Any], ...] = (),
                 status: str | None = None) -> None:
        self.completed += 1
        elapsed, ttft = self._timing(record)
        ending = status or ("waiting" if pending else "completed")
        self._finish(record, TurnCompleted(turn.turn_id, turn.tenant_id, turn.session_id, turn.request_id,
                                           answer, count, usage, elapsed, ttft, ending, pending,
                                           record.profile_version or 0))

    def _timing(self, record: TurnRecord) -> tuple[float, float | None]:
        """Seconds from acceptance to now and to the first token (None without one), for metrics."""
        now = time.monotonic()
        accepted = self._accepted_at.pop(record.turn_id, now)
        running = self._running.get(record.turn_id)
        first = running.progress.first_token_at if running is not None else None
        return now - accepted, None if first is None else first - accepted

    def fail(self, record: TurnRecord, error: str, message: str, status: int,
              retry_after: float | None = None, detail: str | None = None) -> None:
        if retry_after is None and error in RETRY_SOON:  # the client may retry once the store is back
            retry_after = RETRY_SOON[error]
        elapsed, ttft = self._timing(record)
        self._finish(record, TurnFailed(record.turn_id, record.tenant_id, record.session_id, record.request_id,
                                        error, message, status, retry_after, elapsed, ttft, detail,
                                        record.profile_version or 0))

    def _finish(self, record: TurnRecord, event: TurnCompleted | TurnFailed) -> None:
        self.emit(record, event)
        del self._open[record.turn_id]
        if not self._open:
            self._idle.set()

    # --- stopping ----------------------------------------------------------------------------

    def stop(self, record: TurnRecord, reason: str, *, hard: bool = False) -> bool:
        """Stop a queued or running turn (reason: cancelled, interrupted, shutting_down).
        False if it already ended. ``hard`` cancels tools that are running too."""
        turn_id = record.turn_id
        if turn_id not in self._open:
            return False
        running = self._running.get(turn_id)
        if running is None:  # still queued (or left open by its task): it never ran, nothing to commit
            key = (record.tenant_id, record.session_id)
            queued = next((t for t in self._queue.waiting(key) if t.turn_id == turn_id), None)
            if queued is not None:
                self._queue.remove(key, queued)
            message, status = STOP_MESSAGES[reason]
            self.fail(record, reason, message, status)
            return True
        progress = running.progress
        if progress.stop_reason is None:  # a user's cancel stays a cancel if the deadline comes
            progress.stop_reason = reason
        if progress.phase == "commit":  # the turn is being saved: it ends in a moment either way
            return True
        if hard or progress.phase == "model":
            running.task.cancel()
        return True

    def open_record(self, turn_id: str) -> TurnRecord | None:
        return self._open.get(turn_id)

    def open_turns_of(self, key: SessionKey) -> list[TurnRecord]:
        """The session's running turn (first) and its queued ones, in order."""
        running = self._running_of.get(key)
        queued = [self._open[t.turn_id] for t in self._queue.waiting(key)]
        return [running, *queued] if running is not None else queued

    def stop_session(self, key: SessionKey, reason: str) -> int:
        """Stop the session's running turn and every queued one; how many were stopped."""
        records = self.open_turns_of(key)
        # Queued ones first, so none of them starts when the running one ends.
        for record in reversed(records):
            self.stop(record, reason)
        return len(records)

    # --- shutdown -----------------------------------------------------------------------------

    def begin_shutdown(self, timeout: float) -> None:
        """Refuse new turns; cut what is still open after ``timeout`` seconds. Idempotent."""
        if not self.accepting:
            return
        self.accepting = False
        self._stopping.set()
        self._cut_timer = asyncio.get_running_loop().call_later(timeout, self._cut)

    def _cut(self) -> None:
        # All in one synchronous pass: a cut task ends later, and by then nothing is queued.
        self.cut_turns += len(self._open)
        for record in list(self._open.values()):
            self.stop(record, "shutting_down", hard=True)

    async def drained(self) -> None:
        """Once shutdown has begun and every accepted turn has ended (what a stream that follows
        turns waits for before it ends)."""
        await self._stopping.wait()
        await self._idle.wait()

    async def wait_idle(self) -> None:
        """Until every accepted turn has ended."""
        await self._idle.wait()

    async def close(self) -> None:
        """Stop everything now; every turn still open ends with ``shutting_down``."""
        await self.waiting.close_sweeper()
        self.begin_shutdown(0)
        if self._cut_timer is not None:
            self._cut_timer.cancel()
        if self._open:
            self._cut()
        await asyncio.gather(*(r.task for r in list(self._running.values())), return_exceptions=True)
