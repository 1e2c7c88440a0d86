"""The agent runner: the one owner of turn intake, scheduling, stopping and shutdown.

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
from functools import partial
from typing import TYPE_CHECKING, Any, Final

from msev15 import logs
from msev15.agent.budget import fit_context
from msev15.agent.loop import TurnProgress, TurnStopped, run_turn
from msev15.agent.providers.base import LLMError, Provider
from msev15.agent.scheduler import FairScheduler, QueueFull, SessionKey
from msev15.agent.tools.registry import ServiceUnavailable, ToolRegistry
from msev15.events.bus import EventBus
from msev15.events.turnlog import TurnLog, TurnRecord
from msev15.events.types import TurnCompleted, TurnEvent, TurnFailed, TurnRequested
from msev15.store.base import FENCE, FencedOut, Sessions, StoreUnavailable, storable

if TYPE_CHECKING:
    from msev15.agent.coordination import Coordination

log = logging.getLogger("agent.runner")

SHUTTING_DOWN: Final = "The service is shutting down and stopped this turn before it finished. Please retry."
STOP_MESSAGES: Final[dict[str, tuple[str, int]]] = {
    "cancelled": ("The turn was cancelled before it finished.", 409),
    "interrupted": ("A newer message in this session interrupted this turn.", 409),
    "shutting_down": (SHUTTING_DOWN, 503),
}
STOP_NOTES: Final[dict[str, str]] = {
    "cancelled": "(This answer was cancelled before it finished. The tool calls above did complete.)",
    "interrupted": "(This answer was interrupted by a newer message. The tool calls above did complete.)",
    "shutting_down": "(This answer was cut short by a service restart. The tool calls above did complete.)",
}
RETRY_SOON: Final = {"store_unavailable": 5, "turn_lost": 2}  # Retry-After of these 503s (seconds)
STORE_UNAVAILABLE: Final = "The answer could not be saved: the session store is unavailable. Please retry."
TURN_LOST: Final = "This turn lost its session to another instance before it could be saved. Please retry."
FAILED_NOTE: Final = "(This answer failed before it finished. The tool calls above did complete.)"


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
    ) -> None:
        self.bus = bus
        self.turns = turns
        self.sessions = sessions
        self.provider = provider
        self.registry = registry
        self.system_prompt = system_prompt
        self.max_rounds = max_rounds
        self.context_messages = context_messages
        self.context_max_chars = context_max_chars
        self.max_output_chars = max_output_chars
        self.busy_retry_after = busy_retry_after
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
        self.coordination: Coordination | None = None  # set by runner_ctx; None: one process, nothing to do
        self.completed = 0
        self.cut_turns = 0  # turns ended by the shutdown deadline
        bus.on(TurnRequested, self.accept)

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

    def _pump(self) -> None:
        while (ready := self._queue.next()) is not None:
            key, turn = ready
            record = self._open[turn.turn_id]
            self.turns.started(record)
            self._running_of[key] = record
            progress = TurnProgress()
            task = asyncio.create_task(self._run(turn, record, progress), name=TASK_PREFIX + turn.turn_id)
            self._running[turn.turn_id] = _Running(task, progress, key)
            task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        key = self._running.pop(task.get_name().removeprefix(TASK_PREFIX)).key
        del self._running_of[key]
        self._queue.done(key)
        if not task.cancelled() and task.exception() is not None:  # _run ends every turn itself
            log.error("turn task failed", exc_info=task.exception())
        self._pump()

    # --- running a turn --------------------------------------------------------------------

    def _emit(self, record: TurnRecord, event: TurnEvent) -> None:
        """Log first, then fan out: a reader that finds the log has all a subscriber saw."""
        self.turns.append(record, event)
        self.bus.publish(event)

    async def _run(self, turn: TurnRequested, record: TurnRecord, progress: TurnProgress) -> None:
        """The turn's task: one frame for the whole turn (an open stream holds it for minutes), so
        the body is here rather than in a helper it awaits."""
        logs.bind(request_id=turn.request_id, session_id=turn.session_id, tenant_id=turn.tenant_id)
        try:
            started_at = time.time()
            try:
                if self.coordination is not None:  # across instances: wait for the session, take its fence
                    FENCE.set(await self.coordination.acquire(turn))
                answer = await run_turn(
                    turn, progress,
                    provider=self.provider,
                    registry=self.registry,
                    system_prompt=self.system_prompt,
                    history=await self._history(turn),
                    max_rounds=self.max_rounds,
                    max_output_chars=self.max_output_chars,
                    emit=partial(self._emit, record),
                    emit_tokens=turn.stream,
                )
            except (asyncio.CancelledError, TurnStopped) as exc:
                if isinstance(exc, asyncio.CancelledError):
                    current = asyncio.current_task()
                    if current is not None:
                        current.uncancel()
                reason = progress.stop_reason or "shutting_down"
                message, status = STOP_MESSAGES[reason]
                await self._end_failed(turn, record, progress, started_at, reason, message, status, STOP_NOTES[reason])
                return
            except Exception as exc:
                error, message, status = self._failure(exc)
                await self._end_failed(turn, record, progress, started_at, error, message, status, FAILED_NOTE,
                                       retry_after=exc.retry_after if isinstance(exc, LLMError) else None)
                return
            progress.phase = "commit"  # a stop from now on lets the commit finish: the answer is complete
            try:
                count = await self.sessions.commit_turn(turn.tenant_id, turn.session_id, turn.message, started_at,
                                                        storable(progress.steps), storable(answer))
            except FencedOut:
                self._fail(record, "turn_lost", TURN_LOST, 503)
                return
            except Exception:
                log.exception("could not save the turn")
                self._fail(record, "store_unavailable", STORE_UNAVAILABLE, 503)
                return
            self.completed += 1
            elapsed, ttft = self._timing(record)
            self._finish(record, TurnCompleted(turn.turn_id, turn.tenant_id, turn.session_id, turn.request_id,
                                               answer, count, progress.usage, elapsed, ttft))
        finally:
            if turn.turn_id in self._open and not record.finished:  # a backstop: readers never hang on a bug
                log.error("turn %s left open by its task; ending it", turn.turn_id)
                self._fail(record, "internal_error", "The assistant failed while answering. Please retry.", 500)
            if self.coordination is not None:
                await self.coordination.release(turn)

    @staticmethod
    def _failure(exc: Exception) -> tuple[str, str, int]:
        """The client's error, message and status for a turn that failed with ``exc``."""
        if isinstance(exc, FencedOut):
            return "turn_lost", TURN_LOST, 503
        if isinstance(exc, StoreUnavailable):
            return "store_unavailable", STORE_UNAVAILABLE, 503
        if isinstance(exc, LLMError):
            return exc.code, exc.message, exc.status
        if isinstance(exc, ServiceUnavailable):
            return exc.code, "The service cannot save changes right now; please retry in a minute.", 503
        log.error("turn failed unexpectedly", exc_info=exc)
        return "internal_error", "The assistant failed while answering. Please retry.", 500

    async def _history(self, turn: TurnRequested) -> list[dict[str, Any]]:
        """The session's context: the last SESSION_MAX_CONTEXT_MESSAGES, then the newest whole
        turns that fit LLM_CONTEXT_MAX_CHARS beside the system prompt and the new message."""
        history = await self.sessions.context(turn.tenant_id, turn.session_id, self.context_messages)
        room = self.context_max_chars - len(self.system_prompt) - len(turn.message)
        return fit_context(history, max(0, room))

    async def _end_failed(self, turn: TurnRequested, record: TurnRecord, progress: TurnProgress, started_at: float,
                          error: str, message: str, status: int, note: str, *,
                          retry_after: float | None = None) -> None:
        """End a turn that did not complete. Tool calls that did complete are committed with their
        results and ``note``, so the model later knows what was done; otherwise nothing is."""
        steps = progress.completed_steps()
        if steps:
            progress.phase = "commit"
            try:
                await self.sessions.commit_turn(turn.tenant_id, turn.session_id, turn.message, started_at,
                                                storable(steps), note)
            except Exception:
                log.exception("could not save the completed steps of a stopped turn")
        self._fail(record, error, message, status, retry_after)

    def _timing(self, record: TurnRecord) -> tuple[float, float | None]:
        """Seconds from acceptance to now and to the first token (None without one), for metrics."""
        now = time.monotonic()
        accepted = self._accepted_at.pop(record.turn_id, now)
        running = self._running.get(record.turn_id)
        first = running.progress.first_token_at if running is not None else None
        return now - accepted, None if first is None else first - accepted

    def _fail(self, record: TurnRecord, error: str, message: str, status: int,
              retry_after: float | None = None) -> None:
        if retry_after is None and error in RETRY_SOON:  # the client may retry once the store is back
            retry_after = RETRY_SOON[error]
        elapsed, ttft = self._timing(record)
        self._finish(record, TurnFailed(record.turn_id, record.tenant_id, record.session_id, record.request_id,
                                        error, message, status, retry_after, elapsed, ttft))

    def _finish(self, record: TurnRecord, event: TurnCompleted | TurnFailed) -> None:
        self._emit(record, event)
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
            self._fail(record, reason, message, status)
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
        self._cut_timer = asyncio.get_running_loop().call_later(timeout, self._cut)

    def _cut(self) -> None:
        # All in one synchronous pass: a cut task ends later, and by then nothing is queued.
        self.cut_turns += len(self._open)
        for record in list(self._open.values()):
            self.stop(record, "shutting_down", hard=True)

    async def wait_idle(self) -> None:
        """Until every accepted turn has ended."""
        await self._idle.wait()

    async def close(self) -> None:
        """Stop everything now; every turn still open ends with ``shutting_down``."""
        self.begin_shutdown(0)
        if self._cut_timer is not None:
            self._cut_timer.cancel()
        if self._open:
            self._cut()
        await asyncio.gather(*(r.task for r in list(self._running.values())), return_exceptions=True)
