"""One turn at a time per session, across instances; cancel and ``if_busy`` from any instance.

In one process the fair scheduler already runs a session's turns one at a time, so
:class:`LocalCoordination` only forwards cancels to the runner. With SESSION_STORE=redis,
:class:`msev15.agent.redis_coordination.RedisCoordination` does it across instances (imported
only then, so a single process never loads the Redis client).
"""

from __future__ import annotations

from typing import Protocol

from aiohttp import web

from msev15.events.turnlog import TurnRecord, TurnView
from msev15.events.types import TurnRequested

SessionKey = tuple[str, str]  # (tenant_id, session_id)


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


class LocalCoordination:
    across_instances = False
    reads_hold = False  # the caller reads the mode from the session store

    def __init__(self) -> None:
        self.runner: TurnHost = NoHost()

    def start(self, host: TurnHost) -> None:
        self.runner = host

    async def admit(self, turn: TurnRequested, hold: bool = False) -> None:
        return None

    def unpaused(self, turn: TurnRequested) -> bool:
        return False

    def profile_version(self, turn: TurnRequested) -> int | None:
        return None

    async def withdraw(self, turn: TurnRequested) -> None:
        return None

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
