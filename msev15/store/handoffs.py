"""Handoff records: which sessions wait for a person, and which operator holds which.

One record per session (its latest handoff): ``waiting`` (the agent asked for a person, nobody
claimed it yet), ``active`` (an operator holds it), then ``released`` (handed back to the agent)
or ``ticketed`` (nobody came in time: an escalation ticket was opened). The session's own mode
(store/base.py) follows the record; the record is what operators race on, so :meth:`claim` is one
atomic step in every implementation: two operators claiming at once, on one instance or on
several, get exactly one winner.

Implementations: :class:`MemoryHandoffs` here (one process), ``SqliteHandoffs`` (beside the
session database, for every process on the machine) and ``RedisHandoffs`` (every instance), built
by the topology and published under :data:`HANDOFFS`. One contract suite runs against all three
(tests/test_handoff_records.py).
"""

from __future__ import annotations

import builtins
import dataclasses
from dataclasses import dataclass
from typing import Literal, Protocol

from aiohttp import web

Status = Literal["waiting", "active", "ticketed", "released"]
STATUSES: tuple[Status, ...] = ("waiting", "active", "ticketed", "released")
LIVE: tuple[Status, ...] = ("waiting", "active")
ENDED_RETENTION_SECONDS = 86_400  # an ended record stays listable (status=all) this long
ClaimOutcome = Literal["claimed", "already_claimed"]


@dataclass(frozen=True, slots=True)
class HandoffRecord:
    tenant_id: str
    session_id: str
    status: Status
    reason: str
    summary: str
    requested_at: float
    claimed_by: str | None = None  # the operator's id (API key id or the token's sub)
    claimed_by_name: str | None = None  # how the operator is shown (key name or sub)
    claimed_at: float | None = None
    ended_at: float | None = None
    # A ``ticketed`` record whose timeout work (ticket, note, mode) is not done yet: the instance
    # doing it and until when its lease holds (see :meth:`Handoffs.take_timeout`).
    lease_owner: str | None = None
    lease_until: float | None = None

    @property
    def live(self) -> bool:
        return self.status in LIVE


class Handoffs(Protocol):
    async def request(self, tenant_id: str, session_id: str, reason: str, summary: str, now: float) -> HandoffRecord:
        """Open a ``waiting`` record for the session; a live one is kept as it is (and returned)."""
        ...

    async def get(self, tenant_id: str, session_id: str) -> HandoffRecord | None: ...

    async def list(self, tenant_id: str, status: Status | Literal["all"]) -> list[HandoffRecord]:
        """The tenant's records with that status (``all``: every one kept), oldest request first."""
        ...

    async def claim(self, tenant_id: str, session_id: str, operator_id: str, operator_name: str,
                    now: float) -> tuple[ClaimOutcome, HandoffRecord]:
        """Atomically: a ``waiting`` record (or none, or an ended one: an operator takes over a
        session the agent has) becomes ``active`` for this operator. One the same operator holds
        is claimed again (idempotent); one another operator holds is ``already_claimed``."""
        ...

    async def end(self, tenant_id: str, session_id: str, status: Literal["released", "ticketed"], now: float,
                  expect: Status | None = None) -> HandoffRecord | None:
        """End a live record (only if its status is ``expect``, when given); None when there was no
        live record (or it had another status): then nothing changed."""
        ...

    async def overdue(self, before: float, limit: int = 100) -> builtins.list[HandoffRecord]:
        """Records of every tenant still ``waiting`` that were requested before ``before`` (the
        timeout sweep's candidates; :meth:`take_timeout` is what decides one)."""
        ...

    async def take_timeout(self, tenant_id: str, session_id: str, owner: str, now: float, lease_until: float,
                           before: float) -> HandoffRecord | None:
        """Atomically take a handoff's timeout work for ``owner`` until ``lease_until``: a
        ``waiting`` record requested before ``before`` becomes ``ticketed`` (an operator claiming
        at the same moment, or another instance, loses), or a ``ticketed`` one whose work is not
        settled and whose lease lapsed (its owner died) changes owner. None: nothing to take."""
        ...

    async def settle_timeout(self, tenant_id: str, session_id: str, owner: str) -> bool:
        """The timeout work is done: drop the lease, if ``owner`` still holds it."""
        ...

    async def unsettled(self, now: float, limit: int = 100) -> builtins.list[HandoffRecord]:
        """``ticketed`` records of every tenant whose timeout work is not settled and whose lease
        lapsed before ``now``: an instance died doing it, another takes it over."""
        ...

    async def forget(self, tenant_id: str, session_id: str) -> None:
        """Drop the session's record (the session was deleted or expired)."""
        ...

    async def close(self) -> None: ...


def claimed(record: HandoffRecord | None, tenant_id: str, session_id: str, operator_id: str, operator_name: str,
            now: float) -> tuple[ClaimOutcome, HandoffRecord]:
    """The claim rule, for the implementations that apply it in one step of their own."""
    if record is not None and record.status == "active" and record.claimed_by != operator_id:
        return "already_claimed", record
    if record is not None and record.status == "active":
        return "claimed", record
    if record is None or not record.live:  # an operator takes over a session the agent has
        record = HandoffRecord(tenant_id, session_id, "waiting", "Taken over by an operator", "", now)
    return "claimed", dataclasses.replace(record, status="active", claimed_by=operator_id,
                                          claimed_by_name=operator_name, claimed_at=now)


def timeout_taken(record: HandoffRecord | None, owner: str, now: float, lease_until: float,
                  before: float) -> HandoffRecord | None:
    """The take-timeout rule, for the implementations that apply it in one step of their own."""
    if record is None:
        return None
    if record.status == "waiting" and record.requested_at < before:
        return dataclasses.replace(record, status="ticketed", ended_at=now, lease_owner=owner, lease_until=lease_until)
    if lapsed(record, now):
        return dataclasses.replace(record, lease_owner=owner, lease_until=lease_until)
    return None


def lapsed(record: HandoffRecord, now: float) -> bool:
    """A ``ticketed`` record whose timeout work is unsettled and whose owner's lease ran out."""
    return (record.status == "ticketed" and record.lease_owner is not None and record.lease_until is not None
            and record.lease_until < now)


def timeout_settled(record: HandoffRecord | None, owner: str) -> HandoffRecord | None:
    if record is None or record.status != "ticketed" or record.lease_owner != owner:
        return None
    return dataclasses.replace(record, lease_owner=None, lease_until=None)


def ended(record: HandoffRecord | None, status: Literal["released", "ticketed"], now: float,
          expect: Status | None) -> HandoffRecord | None:
    if record is None or not record.live or (expect is not None and record.status != expect):
        return None
    return dataclasses.replace(record, status=status, ended_at=now)


class MemoryHandoffs:
    """One process (SESSION_STORE=memory): a dict; every method completes without suspending, so
    each is atomic."""

    def __init__(self) -> None:
        self._records: dict[tuple[str, str], HandoffRecord] = {}

    async def request(self, tenant_id: str, session_id: str, reason: str, summary: str, now: float) -> HandoffRecord:
        key = (tenant_id, session_id)
        current = self._records.get(key)
        if current is not None and current.live:
            return current
        record = self._records[key] = HandoffRecord(tenant_id, session_id, "waiting", reason, summary, now)
        return record

    async def get(self, tenant_id: str, session_id: str) -> HandoffRecord | None:
        return self._records.get((tenant_id, session_id))

    async def list(self, tenant_id: str, status: Status | Literal["all"]) -> list[HandoffRecord]:
        found = [r for (t, _), r in self._records.items() if t == tenant_id and (status == "all" or r.status == status)]
        return sorted(found, key=lambda r: (r.requested_at, r.session_id))

    async def claim(self, tenant_id: str, session_id: str, operator_id: str, operator_name: str,
                    now: float) -> tuple[ClaimOutcome, HandoffRecord]:
        outcome, record = claimed(self._records.get((tenant_id, session_id)), tenant_id, session_id, operator_id,
                                  operator_name, now)
        if outcome == "claimed":
            self._records[(tenant_id, session_id)] = record
        return outcome, record

    async def end(self, tenant_id: str, session_id: str, status: Literal["released", "ticketed"], now: float,
                  expect: Status | None = None) -> HandoffRecord | None:
        record = ended(self._records.get((tenant_id, session_id)), status, now, expect)
        if record is not None:
            self._records[(tenant_id, session_id)] = record
        return record

    async def overdue(self, before: float, limit: int = 100) -> builtins.list[HandoffRecord]:
        found = [r for r in self._records.values() if r.status == "waiting" and r.requested_at < before]
        return sorted(found, key=lambda r: r.requested_at)[:limit]

    async def take_timeout(self, tenant_id: str, session_id: str, owner: str, now: float, lease_until: float,
                           before: float) -> HandoffRecord | None:
        record = timeout_taken(self._records.get((tenant_id, session_id)), owner, now, lease_until, before)
        if record is not None:
            self._records[(tenant_id, session_id)] = record
        return record

    async def settle_timeout(self, tenant_id: str, session_id: str, owner: str) -> bool:
        record = timeout_settled(self._records.get((tenant_id, session_id)), owner)
        if record is not None:
            self._records[(tenant_id, session_id)] = record
        return record is not None

    async def unsettled(self, now: float, limit: int = 100) -> builtins.list[HandoffRecord]:
        return [r for r in self._records.values() if lapsed(r, now)][:limit]

    async def forget(self, tenant_id: str, session_id: str) -> None:
        self._records.pop((tenant_id, session_id), None)

    async def close(self) -> None:
        return None


HANDOFFS: web.AppKey[Handoffs] = web.AppKey("msev15.handoffs")
