"""One turn at a time per session, across instances; cancel and ``if_busy`` from any instance.

In one process the fair scheduler already runs a session's turns one at a time, so
:class:`LocalCoordination` only forwards cancels to the runner, and, when the sessions, the paused
steps and the tenants' profiles live in one database (SESSION_STORE=postgres without Redis), reads
the session's mode, its paused step, the profile version and the context in one look as it admits
a turn (:class:`AdmissionLook`), as the Redis admit script does. With SESSION_STORE=redis,
:class:`msev15.agent.redis_coordination.RedisCoordination` does it across instances (imported
only then, so a single process never loads the Redis client).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from aiohttp import web

from msev15.events.turnlog import TurnRecord, TurnView
from msev15.events.types import TurnRequested
from msev15.store.base import Looked

SessionKey = tuple[str, str]  # (tenant_id, session_id)

_V = TypeVar("_V", bound=tuple[Any, ...])

RECHECK_SECONDS = 1.0  # what an admission read is trusted for when its turn starts (as with Redis's)
MAX_KEPT = 10_000  # admissions whose turn never started (stopped first) are forgotten past this


class TurnHost(Protocol):
    """What coordination asks of the runner that runs this instance's turns (the runner binds
    itself with :meth:`Coordination.start`, so coordination is built before the runner)."""

    busy_retry_after: int

    def open_record(self, turn_id: str) -> TurnRecord | None: ...

    def open_turns_of(self, key: SessionKey) -> list[TurnRecord]: ...

    def stop(self, record: TurnRecord, reason: str) -> bool: ...

    def stop_session(self, key: SessionKey, reason: str) -> int: ...


class NoHost:
    """The host before the runner binds itself: nothing runs here yet, so nothing to stop."""

    busy_retry_after = 2

    def open_record(self, turn_id: str) -> TurnRecord | None:
        return None

    def open_turns_of(self, key: SessionKey) -> list[TurnRecord]:
        return []

    def stop(self, record: TurnRecord, reason: str) -> bool:
        return False

    def stop_session(self, key: SessionKey, reason: str) -> int:
        return 0


class SessionHeld(Exception):
    """``admit(turn, hold=True)`` found the session held by a person: the turn was not admitted."""

    def __init__(self, mode: str) -> None:
        super().__init__(mode)
        self.mode = mode


class Coordination(Protocol):
    across_instances: bool  # False: the local runner already runs a session's turns one at a time

    @property
    def reads_hold(self) -> bool:
        """True when ``admit(turn, hold=True)`` reads the session's mode in the same step as it
        admits (SessionHeld), so the caller needs no look-up of its own before."""
        ...

    def start(self, host: TurnHost) -> None: ...

    async def admit(self, turn: TurnRequested, hold: bool = False) -> None:
        """Before the turn is published: apply ``if_busy`` across instances (TurnRefused); with
        ``hold`` and :attr:`reads_hold`, refuse a turn of a session a person holds (SessionHeld)."""
        ...

    def unpaused(self, turn: TurnRequested) -> bool:
        """After :meth:`acquire`: True when it is known without a look-up that the session has no
        paused step (see Waiting.resume); False when unknown."""
        ...

    def profile_version(self, turn: TurnRequested) -> int | None:
        """When the turn starts: the tenant's current profile version if the admission read it a
        moment ago (see TurnProfiles.for_turn); None when unknown."""
        ...

    def context(self, turn: TurnRequested) -> list[dict[str, Any]] | None:
        """When the turn reads its history: the session's context if the admission read it and
        this instance knows nothing of the session has changed since; None: read it."""
        ...

    async def withdraw(self, turn: TurnRequested) -> None:
        """An admitted turn that the local runner then refused."""
        ...

    async def acquire(self, turn: TurnRequested) -> str | None:
        """Wait until the turn may run; its fencing token (None: no fencing needed)."""
        ...

    async def release(self, turn: TurnRequested) -> None: ...

    async def cancel(self, record: TurnView, reason: str) -> bool:
        """Stop a turn wherever it runs; False if it has ended."""
        ...

    async def cancel_session(self, tenant_id: str, session_id: str, reason: str) -> int: ...

    async def session_turn(self, tenant_id: str, session_id: str) -> TurnView | None:
        """The session's running turn, else its next queued one, wherever it runs; None if none is open."""
        ...

    async def close(self) -> None: ...


class AdmissionLook(Protocol):
    """One read, at admission, of what a turn would otherwise look up one by one as it starts."""

    reads_hold: bool  # it reads the session's mode
    reads_paused: bool  # it reads whether the session has a paused step
    reads_context: bool  # it reads the session's context when asked

    async def look(self, tenant_id: str, session_id: str, *, hold: bool, paused: bool,
                   context: bool = False) -> Looked: ...


class LocalCoordination:
    """One instance. With a :attr:`look` (set by the topology), :meth:`admit` reads the session's
    mode, its paused step, the tenant's profile version and the session's context in one statement,
    and the turn starts without looking them up again:

    - a held session refuses the turn (SessionHeld), as the caller's own mode look-up would;
    - the profile version is the turn's when it starts within RECHECK_SECONDS of its admission;
    - "no paused step" is trusted only when no other turn of the session was open or being
      admitted on this instance from before the read until after it: only a running turn of the
      session pauses a step, and every later one queues behind this turn;
    - on the same terms, and when the look read it (SESSION_STORE=postgres), the session's
      context: no turn runs on the session before this one, and with no paused step none is
      settled (written) as it starts. Other writers (a delete, an expiry or eviction, a person's
      message) are caught by the store's write marks: the turn uses the context only when this
      instance has written nothing to the session since the read began, and it starts within
      RECHECK_SECONDS. Otherwise it reads the context itself, as without a look.
    """

    across_instances = False

    def __init__(self) -> None:
        self.runner: TurnHost = NoHost()
        self.look: AdmissionLook | None = None
        self._admitting: dict[SessionKey, int] = {}  # sessions with an admission read in flight
        self._contended: set[SessionKey] = set()  # of those, sessions where two overlapped
        # What each admission read, by turn id, oldest first; the turn takes its own as it starts.
        self._versions: OrderedDict[str, tuple[float, int]] = OrderedDict()  # (admitted at, profile version)
        self._unpaused: OrderedDict[str, tuple[float]] = OrderedDict()  # (admitted at,)
        # (admitted at, context, whether it is still the session's)
        self._contexts: OrderedDict[str, tuple[float, list[dict[str, Any]], Callable[[], bool] | None]] = OrderedDict()

    @property
    def reads_hold(self) -> bool:
        """True when the look reads the mode; else the caller reads it from the session store."""
        return self.look is not None and self.look.reads_hold

    def start(self, host: TurnHost) -> None:
        self.runner = host

    async def admit(self, turn: TurnRequested, hold: bool = False) -> None:
        look = self.look
        if look is None:
            return
        key = (turn.tenant_id, turn.session_id)
        alone = key not in self._admitting and not self.runner.open_turns_of(key)
        if not alone:
            self._contended.add(key)
        self._admitting[key] = self._admitting.get(key, 0) + 1
        try:
            found = await look.look(turn.tenant_id, turn.session_id, hold=hold and look.reads_hold,
                                    paused=turn.resumes is None and look.reads_paused,
                                    context=alone and turn.resumes is None and look.reads_context)
        finally:
            left = self._admitting[key] - 1
            if left:
                self._admitting[key] = left
            else:
                del self._admitting[key]
            alone = alone and key not in self._contended
            if not left:
                self._contended.discard(key)
        if hold and found.mode is not None and found.mode != "agent":
            raise SessionHeld(found.mode)
        now = time.monotonic()
        if found.profile_version is not None:
            _keep(self._versions, turn.turn_id, (now, found.profile_version))
        if alone and found.paused is False and not self.runner.open_turns_of(key):
            _keep(self._unpaused, turn.turn_id, (now,))
            if found.context is not None:
                _keep(self._contexts, turn.turn_id, (now, found.context, found.current))

    def unpaused(self, turn: TurnRequested) -> bool:
        """True (once) when the admission found the session without a paused step and nothing
        else of the session in flight (see the class), and the turn starts within RECHECK_SECONDS."""
        admitted = self._unpaused.pop(turn.turn_id, None)
        return admitted is not None and time.monotonic() - admitted[0] < RECHECK_SECONDS

    def profile_version(self, turn: TurnRequested) -> int | None:
        """The tenant's profile version as the admission read it (once), when the turn starts
        within RECHECK_SECONDS of it; None: unknown, read it."""
        admitted = self._versions.pop(turn.turn_id, None)
        if admitted is None or time.monotonic() - admitted[0] >= RECHECK_SECONDS:
            return None
        return admitted[1]

    def context(self, turn: TurnRequested) -> list[dict[str, Any]] | None:
        """The session's context as the admission read it (once), when that was trusted (see the
        class) and the turn reads it within RECHECK_SECONDS; None: read it."""
        admitted = self._contexts.pop(turn.turn_id, None)
        if admitted is None or time.monotonic() - admitted[0] >= RECHECK_SECONDS:
            return None
        current = admitted[2]
        if current is None or not current():  # a write to the session since (a delete, a person's message)
            return None
        return admitted[1]

    async def withdraw(self, turn: TurnRequested) -> None:
        self._versions.pop(turn.turn_id, None)
        self._unpaused.pop(turn.turn_id, None)
        self._contexts.pop(turn.turn_id, None)

    async def acquire(self, turn: TurnRequested) -> str | None:
        return None

    async def release(self, turn: TurnRequested) -> None:
        return None

    async def cancel(self, record: TurnView, reason: str) -> bool:
        return isinstance(record, TurnRecord) and self.runner.stop(record, reason)

    async def cancel_session(self, tenant_id: str, session_id: str, reason: str) -> int:
        return self.runner.stop_session((tenant_id, session_id), reason)

    async def session_turn(self, tenant_id: str, session_id: str) -> TurnView | None:
        open_turns = self.runner.open_turns_of((tenant_id, session_id))
        return open_turns[0] if open_turns else None

    async def close(self) -> None:
        return None


# Filled by the topology (msev15.topology): local in one process, Redis across instances.
COORDINATION: web.AppKey[Coordination] = web.AppKey("msev15.coordination")


def _keep(kept: OrderedDict[str, _V], turn_id: str, value: _V) -> None:
    """Keep ``value`` (its first item: when it was read) for the turn. Entries older than
    RECHECK_SECONDS go first: no turn would use them any more (a turn stopped while it queued
    never takes its own); past MAX_KEPT, the oldest go too."""
    cutoff = value[0] - RECHECK_SECONDS
    while kept and (len(kept) >= MAX_KEPT or next(iter(kept.values()))[0] <= cutoff):
        kept.popitem(last=False)
    kept[turn_id] = value
