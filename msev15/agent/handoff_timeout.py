"""Nobody came: a handoff no operator claimed within HANDOFF_TIMEOUT_SECONDS.

Each instance sweeps the overdue ``waiting`` handoffs of every tenant. Taking one
(:meth:`Handoffs.take_timeout`) is atomic in every store, so of several instances (and of an
operator claiming at that moment) exactly one wins: the record becomes ``ticketed`` with the
winner's lease (REDIS_LEASE_SECONDS). The winner opens an escalation ticket through the tool
tagged ``ticket.escalate`` (EscalationComms' ``sendemail``) with the summary and the transcript,
tells the customer (history and session stream), gives the session back to the agent, the ticket
id in its context, and then settles the lease. Without a ticket service, or without an email
address to send the ticket to, it says so and gives the session back all the same.

Exactly one ticket across instances: an instance that dies before settling leaves a lease that
lapses, and the next sweep of another instance takes the work over (:meth:`Handoffs.unsettled`).
Its ``sendemail`` carries the same idempotency key and the same arguments as the dead owner's
(the key and the transcript derive from the record, the transcript only up to when the timeout
was taken), so EscalationComms joins or replays the first call rather than sending again. The note
to the customer is written again only if the owner died between writing it and settling.
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import logging
import os
import socket
import time
import zlib
from collections.abc import AsyncIterator
from typing import Protocol

from aiohttp import web

from msev15.agent.context import REGISTRY, TURN_PROFILES
from msev15.agent.handoff import WAITING, mode_event
from msev15.agent.offline.text import BARE_CUSTOMER, EMAIL
from msev15.agent.tools.registry import ToolContext, ToolRegistry
from msev15.common.ids import new_id
from msev15.config import SETTINGS
from msev15.events.metrics import METRICS, ServiceMetrics
from msev15.mcpkit.capabilities import TICKET_ESCALATE
from msev15.store.base import SESSIONS, Sessions
from msev15.store.handoffs import HANDOFFS, HandoffRecord, Handoffs
from msev15.store.session_events import SESSION_EVENTS, SessionEvents
from msev15.store.sessions import Message

log = logging.getLogger("agent.handoff")

TRANSCRIPT_CHARS = 6000
BY_TIMEOUT = {"type": "timeout"}


def ticket_for(record: HandoffRecord) -> str:
    """A ticket id of this handoff, the same on every instance."""
    checksum = zlib.crc32(f"{record.tenant_id}:{record.session_id}:{record.requested_at!r}".encode())
    return f"TKT-{datetime.date.today().year}-H{checksum % 1_000_000:06d}"


class TenantTimeouts(Protocol):
    """Tenants' own handoff timeouts (their profiles' ``handoff.timeout_seconds``)."""

    shortest_handoff_timeout: float | None  # the shortest any profile seen here set, None: none did

    async def handoff_timeout(self, tenant_id: str, default: float) -> float: ...


def idempotency_key_for(record: HandoffRecord) -> str:
    """The ticket call's idempotency key: the same for every attempt at this handoff, on any instance."""
    digest = hashlib.sha256(f"{record.tenant_id}:{record.session_id}:{record.requested_at!r}".encode()).hexdigest()
    return f"handoff-timeout:{digest[:40]}"


def owner_id() -> str:
    """This instance as a lease owner: its process id first (a test kills the owner by it)."""
    return f"{os.getpid()}@{socket.gethostname()}:{new_id()[:8]}"


class HandoffTimeouts:
    """The sweep; ``sweeps`` counts the completed ones (tests wait on it, never on the clock).

    ``tenants`` (set once the runner exists) gives a tenant's own timeout: the sweep then takes
    as candidates the handoffs older than the shortest timeout in use and expires each one that
    is older than its own tenant's."""

    def __init__(self, handoffs: Handoffs, sessions: Sessions, events: SessionEvents, registry: ToolRegistry,
                 timeout: float, metrics: ServiceMetrics | None = None, lease: float = 10.0) -> None:
        self.owner = owner_id()
        self.lease = lease
        self.taken_over = 0
        self.metrics = metrics
        self.handoffs = handoffs
        self.sessions = sessions
        self.events = events
        self.registry = registry
        self.timeout = timeout
        self.tenants: TenantTimeouts | None = None
        self.sweeps = 0
        self.ticketed = 0

    @property
    def shortest(self) -> float:
        tenants = self.tenants
        own = tenants.shortest_handoff_timeout if tenants is not None else None
        return self.timeout if own is None else min(self.timeout, own)

    @property
    def interval(self) -> float:
        return min(max(self.shortest / 4, 0.05), 5.0)

    async def sweep(self) -> None:
        now = time.time()
        tenants = self.tenants
        for record in [*await self.handoffs.overdue(now - self.shortest), *await self.handoffs.unsettled(now)]:
            try:
                timeout = self.timeout if tenants is None else await tenants.handoff_timeout(record.tenant_id,
                                                                                             self.timeout)
                if now - record.requested_at < timeout:
                    continue  # its tenant waits longer
                await self._expire(record, timeout)
            except Exception:
                log.exception("the timeout of a handoff failed")
        self.sweeps += 1

    async def run(self) -> None:
        while True:
            try:
                await self.sweep()
            except Exception as exc:  # the store is down: try again next time
                log.warning("handoff timeout sweep failed: %s", type(exc).__name__)
            await asyncio.sleep(self.interval)

    async def _expire(self, record: HandoffRecord, timeout: float) -> None:
        now = time.time()
        taken = await self.handoffs.take_timeout(record.tenant_id, record.session_id, self.owner, now,
                                                 now + self.lease, before=now - timeout)
        if taken is None:
            return  # claimed, or another instance took it (and holds its lease)
        if record.status == "waiting":
            self.ticketed += 1
            if self.metrics is not None:
                self.metrics.handoffs.inc(("ticketed",))
                self.metrics.handoff_wait.observe(now - record.requested_at)
        else:
            self.taken_over += 1
            log.warning("taking over the timeout of a handoff whose instance stopped (%s)", record.lease_owner)
        ticket, message = await self._ticket(taken, timeout)
        now = time.time()
        await self.sessions.commit_messages(record.tenant_id, record.session_id, [Message("assistant", message, now)],
                                            now)
        await self.sessions.set_mode(record.tenant_id, record.session_id, "agent", expect=WAITING)
        await self.events.append(record.tenant_id, record.session_id,
                                 {**mode_event("agent", BY_TIMEOUT), "ticket_id": ticket, "message": message})
        if not await self.handoffs.settle_timeout(record.tenant_id, record.session_id, self.owner):
            log.warning("the lease of a handoff's timeout lapsed before it was settled")
        log.info("handoff not claimed within %gs: %s", timeout, f"ticket {ticket}" if ticket else "no ticket")

    async def _ticket(self, record: HandoffRecord, timeout: float) -> tuple[str | None, str]:
        """(ticket id, what the customer is told)."""
        nobody = "Nobody from our team was free to take over in time"
        tool = next((name for name, cap in self.registry.capabilities().items() if cap == TICKET_ESCALATE), None)
        if tool is None:
            return None, f"{nobody}, and no support-ticket service is connected. I'm back to help you myself."
        session = await self.sessions.get(record.tenant_id, record.session_id)
        until = record.ended_at if record.ended_at is not None else time.time()  # the same on every attempt
        lines = [f"{'Customer' if m.role == 'user' else 'Assistant'}: {m.content}"
                 for m in (session.messages if session else []) if m.visible and m.content and m.ts <= until]
        transcript = "\n".join(lines)[-TRANSCRIPT_CHARS:]
        email = EMAIL.search(transcript)
        if email is None:
            return None, (f"{nobody}, and I have no email address to open a support ticket with. Tell me your email "
                          "address and I'll open one, or ask for a person again.")
        customer = BARE_CUSTOMER.search(transcript)
        ticket = ticket_for(record)
        args = {"ticket_id": ticket, "customer_id": customer.group(1).upper() if customer else "UNKNOWN",
                "customer_email": email.group(0), "use_case": "UC2",
                "query": f"{record.summary or record.reason}\n\nTranscript:\n{transcript}",
                "reason": f"No operator claimed the conversation within {timeout:g} s ({record.reason})"}
        result = await self.registry.call(tool, args, ToolContext(record.tenant_id, record.session_id, ticket,
                                                                  idempotency_key_for(record)))
        if not result.ok:
            log.warning("the timeout ticket failed: %s", result.content)
            return None, f"{nobody}, and the support ticket could not be opened. I'm back to help you myself."
        return ticket, (f"{nobody}, so I opened support ticket {ticket}: the team will email you at "
                        f"{email.group(0)}. I'm back to help you in the meantime.")


TIMEOUTS: web.AppKey[HandoffTimeouts] = web.AppKey("msev15.handoff_timeouts")


async def handoff_timeout_ctx(app: web.Application) -> AsyncIterator[None]:
    """After the tools and MCP connections (the ticket goes through them), before the runner."""
    settings = app[SETTINGS]  # swept with HANDOFF_ENABLED=false too: a tenant's profile may enable handoffs
    timeouts = app[TIMEOUTS] = HandoffTimeouts(app[HANDOFFS], app[SESSIONS], app[SESSION_EVENTS], app[REGISTRY],
                                               settings.handoff_timeout_seconds, app[METRICS],
                                               lease=settings.redis_lease_seconds)
    timeouts.tenants = app[TURN_PROFILES]  # a tenant's profile may set its own timeout
    task = asyncio.get_running_loop().create_task(timeouts.run(), name="handoff:timeouts")
    try:
        yield
    finally:
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
