"""The agent subscriber: turns ``TurnRequested`` events into turns.

One dispatcher task reads requested turns in publish order and appends each to its session's
lane. A lane is a task that runs its session's turns one after another, in arrival order; lanes
of different sessions run concurrently, bounded by a semaphore (more turns wait, none is
rejected). Every turn ends with exactly one terminal event, whatever happens.

Shutdown: the bus stops accepting turns; accepted turns go on. ``cut_after(deadline)`` arms a
timer that cancels what is still running at the deadline; a cut turn ends with ``shutting_down``
and commits nothing, so its session's history is as it was before the turn.
"""

from __future__ import annotations

import asyncio
import logging
import time

from msev15 import logs
from msev15.agent.loop import run_turn
from msev15.agent.providers.base import LLMError, Provider
from msev15.agent.tools.registry import ToolRegistry
from msev15.events.bus import EventBus
from msev15.events.types import Token, TurnCompleted, TurnFailed, TurnRequested
from msev15.store.sessions import SessionStore

log = logging.getLogger("agent.runner")

SHUTTING_DOWN = "The service is shutting down and stopped this turn before it finished. Please retry."


class AgentRunner:
    def __init__(
        self,
        bus: EventBus,
        sessions: SessionStore,
        provider: Provider,
        registry: ToolRegistry,
        *,
        system_prompt: str,
        max_concurrent: int = 100,
        max_rounds: int = 8,
        context_messages: int = 40,
    ) -> None:
        self.bus = bus
        self.sessions = sessions
        self.provider = provider
        self.registry = registry
        self.system_prompt = system_prompt
        self.max_rounds = max_rounds
        self.context_messages = context_messages
        self._slots = asyncio.Semaphore(max_concurrent)
        self._lanes: dict[tuple[str, str], list[TurnRequested]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._dispatcher: asyncio.Task[None] | None = None
        self._sub = bus.subscribe(types=(TurnRequested,))
        self._cut_timer: asyncio.TimerHandle | None = None
        self.completed = 0
        self.failed = 0
        self.cut_turns = 0  # turns ended by the shutdown deadline

    def start(self) -> None:
        self._dispatcher = asyncio.create_task(self._dispatch(), name="agent:dispatch")

    @property
    def active_sessions(self) -> int:
        return len(self._lanes)

    async def _dispatch(self) -> None:
        while True:
            turn = await self._sub.get()
            self._enqueue(turn)

    def _enqueue(self, turn: TurnRequested) -> None:
        key = (turn.tenant_id, turn.session_id)
        lane = self._lanes.get(key)
        if lane is not None:
            lane.append(turn)
            return
        lane = self._lanes[key] = [turn]  # a list: lighter than a deque for one or two turns
        task = asyncio.create_task(self._run_lane(key, lane), name=f"agent:lane:{turn.tenant_id}/{turn.session_id}")
        self._tasks.add(task)
        task.add_done_callback(lambda t: self._lane_done(key, lane, t))

    def _lane_done(self, key: tuple[str, str], lane: list[TurnRequested], task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if self._lanes.get(key) is lane:  # cancelled before its first step: its finally never ran
            del self._lanes[key]
            for turn in lane:
                self._fail(turn, "shutting_down", SHUTTING_DOWN, 503)

    async def _run_lane(self, key: tuple[str, str], lane: list[TurnRequested]) -> None:
        try:
            while lane:
                await self._run_turn(lane[0])
                del lane[0]
        finally:
            del self._lanes[key]
            # Only non-empty when the lane was cancelled: those turns never ran.
            for turn in lane:
                self._fail(turn, "shutting_down", SHUTTING_DOWN, 503)

    async def _run_turn(self, turn: TurnRequested) -> None:
        logs.bind(request_id=turn.request_id, session_id=turn.session_id, tenant_id=turn.tenant_id)
        started_at = time.time()
        async with self._slots:
            try:
                outcome = await run_turn(
                    turn,
                    provider=self.provider,
                    registry=self.registry,
                    system_prompt=self.system_prompt,
                    history=self.sessions.context(turn.tenant_id, turn.session_id, self.context_messages),
                    max_rounds=self.max_rounds,
                    publish=self.bus.publish,
                    publish_tokens=self.bus.wants(Token, turn.turn_id),
                )
            except asyncio.CancelledError:
                # The lane's finally fails this turn (it is still lane[0]).
                raise
            except LLMError as exc:
                self._fail(turn, exc.code, exc.message, exc.status)
                return
            except Exception:
                log.exception("turn failed unexpectedly")
                self._fail(turn, "internal_error", "The assistant failed while answering. Please retry.", 500)
                return
        count = self.sessions.commit_turn(turn.tenant_id, turn.session_id, turn.message, started_at,
                                          outcome.steps, outcome.answer)
        self.completed += 1
        self.bus.publish(TurnCompleted(turn.turn_id, turn.tenant_id, turn.session_id, turn.request_id,
                                       outcome.answer, count, outcome.usage))

    def _fail(self, turn: TurnRequested, error: str, message: str, status: int) -> None:
        self.failed += 1
        self.bus.publish(TurnFailed(turn.turn_id, turn.tenant_id, turn.session_id, turn.request_id,
                                    error, message, status))

    def cut_after(self, seconds: float) -> None:
        """Arm the shutdown deadline: turns still running after ``seconds`` are cancelled."""
        if self._cut_timer is None:
            self._cut_timer = asyncio.get_running_loop().call_later(seconds, self._cut)

    def _cut(self) -> None:
        # Dispatch what was accepted but not yet read, so those turns end too.
        while self._sub.pending():
            self._enqueue(self._sub.get_nowait())
        self.cut_turns += sum(len(lane) for lane in self._lanes.values())
        for task in list(self._tasks):
            task.cancel()

    async def close(self) -> None:
        """Stop everything now; every turn still open ends with ``shutting_down``."""
        if self._cut_timer is not None:
            self._cut_timer.cancel()
        if self._dispatcher is not None:
            self._dispatcher.cancel()
            await asyncio.gather(self._dispatcher, return_exceptions=True)
        self._cut()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._sub.close()
