"""Running one admitted turn to its end: the session's context, the tool loop, the commit, and
exactly one terminal event, whatever happens. Admission, scheduling, stopping and shutdown are
the runner's (agent/runner.py), which starts each turn's task on :meth:`TurnExecution.run` and
keeps the bookkeeping a turn ends through (:class:`TurnBook`).

A stopped turn (cancel, interrupt, the shutdown deadline) or a failed one commits the tool calls
that completed, with their results and a short note (or nothing, if none did), so the session's
history stays valid for every provider.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from functools import partial
from typing import Any, Final, Protocol

from msev15.agent.budget import fit_context
from msev15.agent.coordination import Coordination
from msev15.agent.handoff import WITH_HUMAN, begin_handoff
from msev15.agent.loop import Paused, TurnProgress, TurnStopped, run_turn
from msev15.agent.profile_turn import TurnProfiles
from msev15.agent.providers.base import LLMError, Provider
from msev15.agent.tools.registry import ServiceUnavailable, ToolRegistry
from msev15.agent.waiting import NothingToResume, Waiting
from msev15.events.turnlog import TurnRecord
from msev15.events.types import InputRequired, TurnEvent, TurnRequested
from msev15.logs import service as logs
from msev15.store.base import FENCE, FencedOut, Sessions, StoreUnavailable, storable
from msev15.store.handoffs import Handoffs, MemoryHandoffs
from msev15.store.session_events import MemorySessionEvents, SessionEvents

log = logging.getLogger("agent.runner")


def _arguments(raw: str) -> Any:
    try:
        return json.loads(raw or "{}")
    except ValueError:
        return raw

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
STORE_UNAVAILABLE: Final = "The answer could not be saved: the session store is unavailable. Please retry."
TURN_LOST: Final = "This turn lost its session to another instance before it could be saved. Please retry."
FAILED_NOTE: Final = "(This answer failed before it finished. The tool calls above did complete.)"
RESOLVED: Final = "The waiting calls of this turn were settled before it could continue (a new message or a cancel)."


class TurnBook(Protocol):
    """The runner's side of a turn's end: its log and fan-out, and its open-turn bookkeeping."""

    def emit(self, record: TurnRecord, event: TurnEvent) -> None: ...

    def is_open(self, turn_id: str) -> bool: ...

    def fail(self, record: TurnRecord, error: str, message: str, status: int,
             retry_after: float | None = None, detail: str | None = None) -> None: ...

    def complete(self, turn: TurnRequested, record: TurnRecord, answer: str, count: int,
                 usage: dict[str, int] | None, pending: tuple[dict[str, Any], ...] = (),
                 status: str | None = None) -> None: ...


class TurnExecution:
    def __init__(self, host: TurnBook, sessions: Sessions, provider: Provider, registry: ToolRegistry,
                 coordination: Coordination, waiting: Waiting, *, system_prompt: str, max_rounds: int,
                 context_messages: int, context_max_chars: int, max_output_chars: int,
                 handoffs: Handoffs | None = None, session_events: SessionEvents | None = None,
                 profiles: TurnProfiles | None = None) -> None:
        self.host = host
        self.waiting = waiting
        self.sessions = sessions
        self.provider = provider
        self.registry = registry
        # Across instances: wait for the session and take its fence. In one process the scheduler
        # already runs a session's turns one at a time: nothing to ask (and nothing on the hot path).
        self.coordination: Coordination | None = coordination if coordination.across_instances else None
        # What the admission read for the turn (profile version, no paused step, context), local or not.
        self.admission = coordination
        self.system_prompt = system_prompt
        # Each tenant's profile (issue 25), resolved once per turn; without a store, the defaults.
        self.profiles = profiles if profiles is not None else TurnProfiles(None, registry, system_prompt)
        self.max_rounds = max_rounds
        self.context_messages = context_messages
        self.context_max_chars = context_max_chars
        self.max_output_chars = max_output_chars
        self.handoffs = handoffs if handoffs is not None else MemoryHandoffs()
        self.session_events = session_events if session_events is not None else MemorySessionEvents(0)

    async def run(self, turn: TurnRequested, record: TurnRecord, progress: TurnProgress) -> None:
        """The turn's task: one frame for the whole turn (an open stream holds it for minutes), so
        the body is here rather than in a helper it awaits."""
        logs.bind(request_id=turn.request_id, session_id=turn.session_id, tenant_id=turn.tenant_id)
        try:
            started_at = time.time()
            user_text = turn.message
            try:
                progress.phase = "model"
                if progress.stop_reason is not None:  # stopped before this task first ran
                    raise TurnStopped(progress.stop_reason)
                # The tenant's profile as it is now: this turn keeps it to its end (a continuation
                # after approvals is a new turn and reads it again).
                known = self.admission.profile_version(turn)
                setup = await self.profiles.for_turn(turn.tenant_id, known)
                record.profile_version = setup.version
                if self.coordination is not None:  # across instances: wait for the session, take its fence
                    FENCE.set(await self.coordination.acquire(turn))
                emit = partial(self.host.emit, record)
                unpaused = self.admission.unpaused(turn)
                resumed = await self.waiting.resume(turn, progress, emit, setup.registry, unpaused=unpaused)
                if resumed is not None:  # a continuation: the paused turn's message and start
                    user_text, started_at = resumed.user_message, resumed.started_at
                provider = self.provider
                if setup.model is not None:  # the tenant's model, API, temperature, output limit
                    pick = getattr(provider, "with_model", None)
                    provider = provider if pick is None else pick(setup.model)
                answer = await run_turn(
                    turn, progress,
                    provider=provider,
                    registry=setup.registry,
                    system_prompt=setup.system_prompt,
                    history=await self._history(turn, user_text, setup.system_prompt),
                    max_rounds=self.max_rounds,
                    max_output_chars=self.max_output_chars,
                    emit=emit,
                    emit_tokens=turn.stream,
                    waits=self.waiting.waits_for(turn, setup.approval, setup.allowed),
                    client_schemas=self.waiting.client_schemas(turn, setup.allowed),
                    user_text=user_text,
                    resumed=list(progress.steps) if resumed is not None else None,
                )
            except (asyncio.CancelledError, TurnStopped) as exc:
                if isinstance(exc, asyncio.CancelledError):
                    current = asyncio.current_task()
                    if current is not None:
                        current.uncancel()
                reason = progress.stop_reason or "shutting_down"
                message, status = STOP_MESSAGES[reason]
                await self._end_failed(turn, record, progress, user_text, started_at, reason, message, status,
                                       STOP_NOTES[reason])
                return
            except Exception as exc:
                error, message, status = self._failure(exc)
                model = exc if isinstance(exc, LLMError) else None
                await self._end_failed(turn, record, progress, user_text, started_at, error, message, status,
                                       FAILED_NOTE, retry_after=model.retry_after if model else None,
                                       detail=model.detail if model else None)
                return
            progress.phase = "commit"  # a stop from now on lets the commit finish: the answer is complete
            if isinstance(answer, Paused):
                await self._pause(turn, record, progress, answer, user_text, started_at)
                return
            try:
                count = await self.sessions.commit_turn(turn.tenant_id, turn.session_id, user_text, started_at,
                                                        storable(progress.steps), storable(answer))
            except FencedOut:
                self.host.fail(record, "turn_lost", TURN_LOST, 503)
                return
            except Exception:
                log.exception("could not save the turn")
                self.host.fail(record, "store_unavailable", STORE_UNAVAILABLE, 503)
                return
            ending: str | None = None
            if progress.handoff is not None:  # a person takes over (agent/handoff.py)
                try:
                    await begin_handoff(self.sessions, self.handoffs, self.session_events, turn,
                                        partial(self.host.emit, record), progress.handoff)
                except Exception:
                    log.exception("could not hand the session over")
                    self.host.fail(record, "store_unavailable", STORE_UNAVAILABLE, 503)
                    return
                ending = WITH_HUMAN
            self.host.complete(turn, record, answer, count, progress.usage, status=ending)
        finally:
            if self.host.is_open(turn.turn_id) and not record.finished:  # a backstop: readers never hang on a bug
                log.error("turn %s left open by its task; ending it", turn.turn_id)
                self.host.fail(record, "internal_error", "The assistant failed while answering. Please retry.", 500)
            if self.coordination is not None:
                await self.coordination.release(turn)

    async def _pause(self, turn: TurnRequested, record: TurnRecord, progress: TurnProgress, step: Paused,
                     user_text: str, started_at: float) -> None:
        """Store the paused step (before anyone hears of it: a decision may come at once), announce
        each waiting call, and end the turn ``waiting``. Nothing is committed to the history yet."""
        try:  # the count first: once the step is stored, this turn must end "waiting", not fail
            session = await self.sessions.get(turn.tenant_id, turn.session_id)
            paused = await self.waiting.pause(turn, progress, step, user_text, started_at)
        except Exception:
            log.exception("could not store the waiting calls")
            await self._end_failed(turn, record, progress, user_text, started_at, "store_unavailable",
                                   STORE_UNAVAILABLE, 503, FAILED_NOTE)
            return
        pending = []
        for waiting in paused.waiting:
            call = paused.call(waiting["call_id"])
            event = InputRequired(turn.turn_id, turn.tenant_id, turn.session_id, turn.request_id, waiting["kind"],
                                  call["id"], call["name"], _arguments(call["arguments"]))
            self.host.emit(record, event)
            pending.append({"kind": event.kind, "call_id": event.call_id, "name": event.name,
                            "arguments": event.arguments})
        count = session.visible_count if session is not None else 0
        self.host.complete(turn, record, progress.answer, count, progress.usage, tuple(pending))

    @staticmethod
    def _failure(exc: Exception) -> tuple[str, str, int]:
        """The client's error, message and status for a turn that failed with ``exc``."""
        if isinstance(exc, FencedOut):
            return "turn_lost", TURN_LOST, 503
        if isinstance(exc, StoreUnavailable):
            return "store_unavailable", STORE_UNAVAILABLE, 503
        if isinstance(exc, LLMError):
            return exc.code, exc.message, exc.status
        if isinstance(exc, NothingToResume):
            return "pending_resolved", RESOLVED, 409
        if isinstance(exc, ServiceUnavailable):
            return exc.code, "The service cannot save changes right now; please retry in a minute.", 503
        log.error("turn failed unexpectedly", exc_info=exc)
        return "internal_error", "The assistant failed while answering. Please retry.", 500

    async def _history(self, turn: TurnRequested, user_text: str, system_prompt: str) -> list[dict[str, Any]]:
        """The session's context: the last SESSION_MAX_CONTEXT_MESSAGES, then the newest whole
        turns that fit LLM_CONTEXT_MAX_CHARS beside the system prompt and the new message."""
        history = self.admission.context(turn)  # read with the admission a moment ago, when still exact
        if history is None:
            history = await self.sessions.context(turn.tenant_id, turn.session_id, self.context_messages)
        room = self.context_max_chars - len(system_prompt) - len(user_text)
        return fit_context(history, max(0, room))

    async def _end_failed(self, turn: TurnRequested, record: TurnRecord, progress: TurnProgress, user_text: str,
                          started_at: float, error: str, message: str, status: int, note: str, *,
                          retry_after: float | None = None, detail: str | None = None) -> None:
        """End a turn that did not complete. Tool calls that did complete are committed with their
        results and ``note``, so the model later knows what was done; otherwise nothing is."""
        steps = progress.completed_steps()
        if steps:
            progress.phase = "commit"
            try:
                await self.sessions.commit_turn(turn.tenant_id, turn.session_id, user_text, started_at,
                                                storable(steps), note)
            except Exception:
                log.exception("could not save the completed steps of a stopped turn")
        self.host.fail(record, error, message, status, retry_after, detail)
