"""Handing a session to a person and back: the end of a turn that called ``handoff_to_human``,
and what operators do (claim, write, release). Handlers call these with explicit dependencies.

After the turn's messages are committed, the session's mode moves from ``agent`` to
``waiting_for_human`` and the turn emits ``handoff`` (mode, reason, summary) before its ``done``
(status ``with_human``). From then on customer messages are stored for the operator, not sent
to the model (handlers/handoff_chat.py), until an operator releases the session.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from msev15.common.ids import new_id
from msev15.events.metrics import ServiceMetrics
from msev15.events.types import Handoff, TurnEvent, TurnRequested
from msev15.store.base import Sessions, storable
from msev15.store.handoffs import HandoffRecord, Handoffs
from msev15.store.session_events import SessionEvents
from msev15.store.sessions import Message

log = logging.getLogger("agent.handoff")

WAITING = "waiting_for_human"
HUMAN = "human"
WITH_HUMAN = "with_human"


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


@dataclass(frozen=True, slots=True)
class Operator:
    """Who acts: the API key's id and name, or the token's ``sub`` (both)."""

    id: str
    name: str

    def author(self) -> dict[str, str]:
        return {"type": "human", "id": self.id, "name": self.name}


AGENT_BY = {"type": "agent"}


def mode_event(mode: str, by: dict[str, str]) -> dict[str, Any]:
    """The session stream's ``mode`` event: who answers now, and who made it so."""
    return {"type": "mode", "mode": mode, "by": by}


def human_message_event(message_id: str, content: str, operator: Operator) -> dict[str, Any]:
    return {"type": "human_message", "message_id": message_id, "content": content,
            "author": {"id": operator.id, "name": operator.name}}


async def begin_handoff(sessions: Sessions, handoffs: Handoffs, events: SessionEvents, turn: TurnRequested,
                        emit: Callable[[TurnEvent], None], arguments: dict[str, Any]) -> None:
    """Open the session's ``waiting`` handoff record (operators see it in their queue), move the
    just-committed session to ``waiting_for_human`` and emit the ``handoff`` event. A session a
    person already holds (an operator claimed it during the turn) keeps its record and mode."""
    reason, summary = _text(arguments.get("reason")), _text(arguments.get("summary"))
    await handoffs.request(turn.tenant_id, turn.session_id, reason, summary, time.time())
    moved = await sessions.set_mode(turn.tenant_id, turn.session_id, WAITING, expect="agent")
    session = None if moved else await sessions.get(turn.tenant_id, turn.session_id)
    mode = WAITING if moved or session is None else session.mode
    log.info("session handed off to a person (mode %s)", mode)
    emit(Handoff(turn.turn_id, turn.tenant_id, turn.session_id, turn.request_id, mode, reason, summary))
    if moved:  # on the session stream: the turn's handoff, the change of mode, then the turn's done
        events.publish(turn.tenant_id, turn.session_id, mode_event(WAITING, AGENT_BY))


class HandoffRefused(Exception):
    """An operator action that cannot happen now: ``code`` and ``status`` for the envelope."""

    def __init__(self, status: int, code: str, message: str, **fields: Any) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.fields = fields


def _not_found(session_id: str) -> HandoffRefused:
    # The same answer whether the session is missing or another tenant's: no leak.
    return HandoffRefused(404, "Session not found", f"No session {session_id!r} exists for this tenant.",
                          session_id=session_id)


def _not_active(session_id: str) -> HandoffRefused:
    return HandoffRefused(409, "not_active", "Nobody holds this conversation: claim it first.", session_id=session_id)


async def claim(sessions: Sessions, handoffs: Handoffs, events: SessionEvents, tenant_id: str, session_id: str,
                operator: Operator, metrics: ServiceMetrics | None = None) -> HandoffRecord:
    """The operator takes the session (waiting for a person, or the agent's): exactly one of
    several racing operators wins; the others get 409 ``already_claimed``."""
    before = await sessions.mode(tenant_id, session_id)
    if before is None:
        raise _not_found(session_id)
    outcome, record = await handoffs.claim(tenant_id, session_id, operator.id, operator.name, time.time())
    if outcome == "already_claimed":
        raise HandoffRefused(409, "already_claimed", "Another operator holds this conversation.",
                             session_id=session_id, claimed_by=record.claimed_by_name or record.claimed_by)
    if before != HUMAN:  # claimed again by its holder: nothing changes
        if metrics is not None:
            metrics.handoffs.inc(("claimed",))
            if before == WAITING and record.claimed_at is not None:
                metrics.handoff_wait.observe(record.claimed_at - record.requested_at)
        await sessions.set_mode(tenant_id, session_id, HUMAN)
        await events.append(tenant_id, session_id, mode_event(HUMAN, operator.author()))
    log.info("operator %s claimed the session", operator.id)
    return record


async def _held(sessions: Sessions, handoffs: Handoffs, tenant_id: str, session_id: str) -> HandoffRecord | None:
    if await sessions.mode(tenant_id, session_id) is None:
        raise _not_found(session_id)
    record = await handoffs.get(tenant_id, session_id)
    return record if record is not None and record.live else None


async def post_message(sessions: Sessions, handoffs: Handoffs, events: SessionEvents, tenant_id: str,
                       session_id: str, operator: Operator, content: str) -> str:
    """The holding operator's message, stored as an assistant message with its author; its id."""
    record = await _held(sessions, handoffs, tenant_id, session_id)
    if record is None or record.status != "active":
        raise _not_active(session_id)
    if record.claimed_by != operator.id:
        raise HandoffRefused(403, "forbidden", "Only the operator holding this conversation may write in it.",
                             session_id=session_id)
    message_id, content = new_id(), storable(content)
    now = time.time()
    await sessions.commit_messages(tenant_id, session_id, [
        Message("assistant", content, now, {"author": operator.author(), "message_id": message_id})], now)
    await events.append(tenant_id, session_id, human_message_event(message_id, content, operator))
    return message_id


async def release(sessions: Sessions, handoffs: Handoffs, events: SessionEvents, tenant_id: str, session_id: str,
                  operator: Operator, note: str | None, *, any_holder: bool = False,
                  metrics: ServiceMetrics | None = None) -> HandoffRecord:
    """Hand the session back to the agent. The holder (or, with ``any_holder``, an admin) may
    release an active handoff; any operator may send back one nobody claimed. A note is stored as
    the operator's last message, so the customer and the model both read it."""
    record = await _held(sessions, handoffs, tenant_id, session_id)
    if record is None:
        raise _not_active(session_id)
    if record.status == "active" and record.claimed_by != operator.id and not any_holder:
        raise HandoffRefused(403, "forbidden", "Only the operator holding this conversation may release it.",
                             session_id=session_id)
    ended_record = await handoffs.end(tenant_id, session_id, "released", time.time(), expect=record.status)
    if ended_record is None:  # changed under us (claimed, released or ticketed meanwhile)
        raise _not_active(session_id)
    if metrics is not None:
        metrics.handoffs.inc(("released",))
        if ended_record.claimed_at is not None and ended_record.ended_at is not None:
            metrics.handoff_with_human.observe(ended_record.ended_at - ended_record.claimed_at)
    if note:
        now, message_id, note = time.time(), new_id(), storable(note)
        await sessions.commit_messages(tenant_id, session_id, [
            Message("assistant", note, now, {"author": operator.author(), "message_id": message_id})], now)
        await events.append(tenant_id, session_id, human_message_event(message_id, note, operator))
    await sessions.set_mode(tenant_id, session_id, "agent")
    await events.append(tenant_id, session_id, mode_event("agent", operator.author()))
    log.info("operator %s released the session to the agent", operator.id)
    return ended_record
