"""A customer's message while a person holds the session (mode ``waiting_for_human`` or ``human``).

It is stored in the session's history for the operator and never sent to the model. The check is
made by ``start_turn`` (handlers/chat.py), so it holds on every front door: :func:`hold_for_person`
reads the mode, or, with sessions and queues in one Redis, the coordination's admit script reads
it in the step that admits the turn (no round trip of its own) and :func:`keep_for_person` stores
the message. Instead of running a turn, ``start_turn`` returns a :class:`HeldRecord`, a turn
record that has ended already with a ``handoff`` event (the current mode) and ``done`` with
``"status": "with_human"`` (the turn log holds it too, so it is looked up like any other). Each
protocol relays it in its own terms (an AG-UI run, an AI SDK message, an A2A task in
INPUT_REQUIRED, an MCP tool result). ``/chat`` answers 200 with
``"status": "with_human"`` and ``"message": null``; ``/chat/stream`` sends the two frames without
``id:``: no turn ran, so there is nothing to resume. With HANDOFF_ENABLED=false nobody can hold a
session and turns skip the look-up.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from msev15.agent.context import TURN_PROFILES
from msev15.agent.handoff import WITH_HUMAN
from msev15.common.ids import new_id
from msev15.config import SETTINGS
from msev15.events.turnlog import TURNS, TurnRecord
from msev15.events.types import Handoff, TurnCompleted, TurnRequested
from msev15.handlers.errors import utc_now_iso
from msev15.handlers.streams import TURN_ID_HEADER, frame
from msev15.handlers.validation import ChatRequest
from msev15.store.base import SESSIONS
from msev15.store.session_events import SESSION_EVENTS
from msev15.store.sessions import Message


@dataclass(frozen=True, slots=True)
class Held:
    """The session is a person's: its mode, and its visible message count after the message."""

    mode: str
    message_count: int


class HeldRecord(TurnRecord):
    """The record ``start_turn`` returns for a held message: ended already. The turn log holds a
    record of the same turn with the same events (:func:`hold_for_person`), so it is found by its
    id afterwards (A2A's GetTask on the INPUT_REQUIRED task), on this instance or another."""

    __slots__ = ("held",)

    def __init__(self, turn: TurnRequested, held: Held, profile_version: int) -> None:
        super().__init__(turn)
        self.held = held
        self.profile_version = profile_version  # the tenant's current version: what would have answered
        now = time.monotonic()
        ids = (turn.turn_id, turn.tenant_id, turn.session_id, turn.request_id)
        self.append(Handoff(*ids, held.mode), now)
        self.append(TurnCompleted(*ids, "", held.message_count, status=WITH_HUMAN,
                                  profile_version=profile_version), now)


def hold_applies(app: web.Application, turn: TurnRequested) -> bool:
    """Whether a person may hold the session this turn is for (a decided call goes on regardless)."""
    return app[SETTINGS].handoff_enabled and turn.resumes is None


async def hold_for_person(app: web.Application, turn: TurnRequested) -> HeldRecord | None:
    """Store the turn's message for the operator when a person holds the session; None when the
    agent answers it (then the caller runs the turn as usual). The tenant's rate was checked."""
    if not hold_applies(app, turn):
        return None
    mode = await app[SESSIONS].mode(turn.tenant_id, turn.session_id)
    if mode is None or mode == "agent":
        return None
    return await keep_for_person(app, turn, mode)


async def keep_for_person(app: web.Application, turn: TurnRequested, mode: str) -> HeldRecord:
    """Store the turn's message for the operator of a session held in ``mode``: no turn runs."""
    sessions = app[SESSIONS]
    version = await app[TURN_PROFILES].version(turn.tenant_id)  # reported like a run turn's
    now, message_id = time.time(), new_id()
    count = await sessions.commit_messages(turn.tenant_id, turn.session_id,
                                           [Message("user", turn.message, now, {"message_id": message_id})], now)
    await app[SESSION_EVENTS].append(turn.tenant_id, turn.session_id, {
        "type": "customer_message", "message_id": message_id, "content": turn.message})
    record = HeldRecord(turn, Held(mode, count), version)
    # In the turn log before the reply names it: a shared log has written it when this returns.
    await app[TURNS].ended(turn, record.events).outcome()
    return record


def held_json(chat: ChatRequest, record: HeldRecord) -> dict[str, Any]:
    held = record.held
    return {"session_id": chat.session_id, "message": None, "status": WITH_HUMAN, "mode": held.mode,
            "timestamp": utc_now_iso(), "message_count": held.message_count, "tenant_id": chat.tenant_id,
            "turn_id": record.turn_id, "profile_version": record.profile_version}


async def held_stream(request: web.Request, record: HeldRecord) -> web.StreamResponse:
    """The held message's answer as a stream: the record's ``handoff`` (the mode) and ``done``
    frames, numbered and with the ``X-Turn-ID`` header like any turn's, and the same frames a
    resume of the turn replays (the turn log holds the same record)."""
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                                       TURN_ID_HEADER: record.turn_id})
    await resp.prepare(request)
    await resp.write(b"".join(frame(record.turn_id, seq, event) for seq, event in enumerate(record.events, 1)))
    await resp.write_eof()
    return resp
