"""A customer's message while a person holds the session (mode ``waiting_for_human`` or ``human``).

It is stored in the session's history for the operator and never sent to the model: ``/chat``
answers 200 with ``"status": "with_human"`` and ``"message": null``; ``/chat/stream`` sends one
``handoff`` event with the current mode and ``done`` with ``"status": "with_human"``. These two
frames carry no ``id:``: no turn ran, so there is nothing to resume. With HANDOFF_ENABLED=false
nobody can hold a session and chats skip the look-up.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from msev15.agent.handoff import WITH_HUMAN
from msev15.common.ids import new_id
from msev15.config import SETTINGS
from msev15.handlers.errors import utc_now_iso
from msev15.handlers.ratelimit import TENANT_COUNTED, check_tenant_rate
from msev15.handlers.validation import ChatRequest
from msev15.logs import service as logs
from msev15.store.base import SESSIONS
from msev15.store.session_events import SESSION_EVENTS
from msev15.store.sessions import Message


@dataclass(frozen=True, slots=True)
class Held:
    """The session is a person's: its mode, and its visible message count after the message."""

    mode: str
    message_count: int


async def hold_for_person(request: web.Request, chat: ChatRequest) -> Held | None:
    """Store ``chat.message`` for the operator when a person holds the session; None when the agent
    answers it (then the caller starts a turn as usual)."""
    app = request.app
    if not app[SETTINGS].handoff_enabled:
        return None
    sessions = app[SESSIONS]
    mode = await sessions.mode(chat.tenant_id, chat.session_id)
    if mode is None or mode == "agent":
        return None
    if not request.get(TENANT_COUNTED, False):
        await check_tenant_rate(app, chat.tenant_id)
    now, message_id = time.time(), new_id()
    count = await sessions.commit_messages(chat.tenant_id, chat.session_id,
                                           [Message("user", chat.message, now, {"message_id": message_id})], now)
    await app[SESSION_EVENTS].append(chat.tenant_id, chat.session_id, {
        "type": "customer_message", "message_id": message_id, "content": chat.message})
    logs.bind(session_id=chat.session_id, tenant_id=chat.tenant_id)
    return Held(mode, count)


def held_json(chat: ChatRequest, held: Held) -> dict[str, Any]:
    return {"session_id": chat.session_id, "message": None, "status": WITH_HUMAN, "mode": held.mode,
            "timestamp": utc_now_iso(), "message_count": held.message_count, "tenant_id": chat.tenant_id}


async def held_stream(request: web.Request, chat: ChatRequest, held: Held) -> web.StreamResponse:
    frames = ({"type": "handoff", "mode": held.mode, "session_id": chat.session_id},
              {"type": "done", "session_id": chat.session_id, "message_count": held.message_count,
               "status": WITH_HUMAN})
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await resp.prepare(request)
    await resp.write(b"".join(b"data: " + json.dumps(f, ensure_ascii=False).encode() + b"\n\n" for f in frames))
    await resp.write_eof()
    return resp
