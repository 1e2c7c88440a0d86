"""Pending calls: the tool calls a paused turn waits on, stored with the session.

A turn pauses when the model asks for calls that need a person's approval (TOOL_APPROVAL) or a
client's output (client tools). What the turn had done is kept here as one :class:`PausedTurn`
per session (a session has at most one paused step: a new message settles it first), so the
conversation can go on after a restart (sqlite) or on another instance (redis). Nothing of a
paused turn is in the session's history until it is settled: its calls and results are committed
together then, so the history never holds a call without its result.

Three operations are atomic in every implementation, and the contract suite
(tests/test_pending_stores.py) checks them over memory, sqlite and redis:

- :meth:`PendingCalls.decide` records one decision: a second decision of the same call raises
  :class:`AlreadyDecided` (of two racing deciders exactly one wins), and the decider whose
  decision was the step's last gets ``remaining == 0`` (exactly one continuation starts).
- :meth:`PendingCalls.take` removes the paused step and returns it, to one caller only: the
  continuation turn, the new message that supersedes it, the expiry sweep or a cancel. Whoever
  takes it settles it (runs the approved calls, once) and commits it. The step's decisions are
  remembered after it is taken (until the session pauses again), so a late second decider of a
  call still gets :class:`AlreadyDecided`, not "not found".
"""

from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from aiohttp import web


class PendingNotFound(Exception):
    """No such waiting call in this session (never asked for, or settled already)."""


class AlreadyDecided(Exception):
    """The call has a decision already."""


@dataclass(slots=True)
class PausedTurn:
    """What a paused turn had done, and what it waits for. Plain JSON-able values throughout.

    ``calls`` are every call of the paused step, in the model's order (``{id, name, arguments}``,
    arguments as the model's JSON text); ``results`` the ones that ran (``{ok, content}`` by id);
    ``waiting`` the rest (``{call_id, kind}``); ``decisions`` the answers so far, by call id
    (``{approve, reason?}`` or ``{output}``, with ``decided_at``)."""

    tenant_id: str
    session_id: str
    turn_id: str
    user_message: str
    started_at: float
    requested_at: float
    expires_at: float
    steps: list[dict[str, Any]]  # the turn's whole tool rounds before the paused step
    text: str | None  # what the model said with the paused step's calls
    streamed: list[str]  # the turn's answer so far
    calls: list[dict[str, str]]
    results: dict[str, dict[str, Any]]
    waiting: list[dict[str, str]]
    tools: list[dict[str, Any]] = field(default_factory=list)  # the client tools offered to the turn
    decisions: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def remaining(self) -> int:
        return sum(1 for w in self.waiting if w["call_id"] not in self.decisions)

    def kind_of(self, call_id: str) -> str | None:
        return next((w["kind"] for w in self.waiting if w["call_id"] == call_id), None)

    def call(self, call_id: str) -> dict[str, str]:
        return next(c for c in self.calls if c["id"] == call_id)

    def undecided(self) -> list[dict[str, str]]:
        return [w for w in self.waiting if w["call_id"] not in self.decisions]

    def dumps(self) -> str:
        """Without the decisions: the stores keep those beside the body, one per call."""
        body = asdict(self)
        del body["decisions"]
        return json.dumps(body, separators=(",", ":"))

    @classmethod
    def loads(cls, raw: str, decisions: dict[str, dict[str, Any]]) -> PausedTurn:
        return cls(**json.loads(raw), decisions=decisions)


class PendingCalls(Protocol):
    kind: str  # "memory", "sqlite" or "redis"

    async def pause(self, paused: PausedTurn) -> None:
        """Store a paused step (replacing any earlier one of the session: it was settled before)."""
        ...

    async def get(self, tenant_id: str, session_id: str) -> PausedTurn | None:
        """The session's paused step with its decisions so far, or None."""
        ...

    async def decide(self, tenant_id: str, session_id: str, call_id: str, decision: dict[str, Any]) -> int:
        """Record one decision; how many calls of the step still wait. Raises PendingNotFound
        (no such waiting call) or AlreadyDecided."""
        ...

    async def decided(self, tenant_id: str, session_id: str, call_id: str) -> bool:
        """Whether the call has a decision, its step waiting still or settled since."""
        ...

    async def take(self, tenant_id: str, session_id: str, turn_id: str | None = None) -> PausedTurn | None:
        """Remove and return the session's paused step (only the one of ``turn_id``, when given);
        None if there is none: another caller took it."""
        ...

    async def due(self, now: float, limit: int = 100) -> list[tuple[str, str, str]]:
        """(tenant, session, turn id) of paused steps whose ``expires_at`` is past ``now``."""
        ...

    async def stalled(self, before: float, limit: int = 100) -> list[tuple[str, str, str]]:
        """(tenant, session, turn id) of steps whose every call was decided, the last decision
        before ``before``, and that nobody took since: their continuation was lost (the
        instance stopped with it queued), so the sweep starts another."""
        ...

    async def close(self) -> None: ...


class MemoryPendingCalls:
    """In this process: the paused steps of SESSION_STORE=memory (lost on restart, like its sessions)."""

    kind = "memory"

    MAX_SETTLED = 10_000  # sessions whose settled decisions are remembered (the oldest go first)

    def __init__(self) -> None:
        self._paused: dict[tuple[str, str], tuple[str, dict[str, dict[str, Any]]]] = {}
        self._settled: OrderedDict[tuple[str, str], frozenset[str]] = OrderedDict()

    async def pause(self, paused: PausedTurn) -> None:
        key = (paused.tenant_id, paused.session_id)
        self._paused[key] = (paused.dumps(), {})
        self._settled.pop(key, None)

    async def get(self, tenant_id: str, session_id: str) -> PausedTurn | None:
        held = self._paused.get((tenant_id, session_id))
        return None if held is None else PausedTurn.loads(held[0], dict(held[1]))

    async def decide(self, tenant_id: str, session_id: str, call_id: str, decision: dict[str, Any]) -> int:
        paused = await self.get(tenant_id, session_id)
        if paused is None and call_id in self._settled.get((tenant_id, session_id), ()):
            raise AlreadyDecided(call_id)
        if paused is None or paused.kind_of(call_id) is None:
            raise PendingNotFound(call_id)
        decisions = self._paused[(tenant_id, session_id)][1]
        if call_id in decisions:
            raise AlreadyDecided(call_id)
        decisions[call_id] = decision
        paused.decisions[call_id] = decision
        return paused.remaining

    async def decided(self, tenant_id: str, session_id: str, call_id: str) -> bool:
        key = (tenant_id, session_id)
        held = self._paused.get(key)
        return call_id in (held[1] if held is not None else self._settled.get(key, ()))

    async def take(self, tenant_id: str, session_id: str, turn_id: str | None = None) -> PausedTurn | None:
        paused = await self.get(tenant_id, session_id)
        if paused is None or (turn_id is not None and paused.turn_id != turn_id):
            return None
        key = (tenant_id, session_id)
        del self._paused[key]
        self._settled[key] = frozenset(paused.decisions)
        while len(self._settled) > self.MAX_SETTLED:
            self._settled.popitem(last=False)
        return paused

    async def due(self, now: float, limit: int = 100) -> list[tuple[str, str, str]]:
        found = []
        for held, _ in self._paused.values():
            body = json.loads(held)
            if body["expires_at"] <= now:
                found.append((body["tenant_id"], body["session_id"], body["turn_id"]))
                if len(found) >= limit:
                    break
        return found

    async def stalled(self, before: float, limit: int = 100) -> list[tuple[str, str, str]]:
        found = []
        for held, decisions in self._paused.values():
            body = json.loads(held)
            if len(decisions) == len(body["waiting"]) and _last_decision(decisions) < before:
                found.append((body["tenant_id"], body["session_id"], body["turn_id"]))
                if len(found) >= limit:
                    break
        return found

    async def close(self) -> None:
        return None


def _last_decision(decisions: dict[str, dict[str, Any]]) -> float:
    return max((float(d.get("decided_at", 0.0)) for d in decisions.values()), default=0.0)


# Filled by the topology (msev15.topology), beside the session store it belongs with.
PENDING: web.AppKey[PendingCalls] = web.AppKey("msev15.pending")
