"""What hangs on a session goes with it: its ratings (store/feedback.py), its handoff record
(store/handoffs.py) and its session stream's log (store/session_events.py).

Two paths drop a session: ``DELETE /api/v1/sessions/{id}`` (handlers/sessions.py calls
:func:`forget_session` with a last ``session_deleted`` event, so open session streams read it and
end) and the TTL expiry, whose sweeper (store/context.py) calls :func:`forget_expired` with what
:meth:`Sessions.gone` reports. A session id used again after its session expired (a customer coming
back with the same id) keeps what it has now: only ids that no longer exist are dropped.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from msev15.store.base import SESSIONS
from msev15.store.feedback import FEEDBACK
from msev15.store.handoffs import HANDOFFS
from msev15.store.session_events import SESSION_EVENTS

DELETED: dict[str, Any] = {"type": "session_deleted"}


async def forget_session(app: web.Application, tenant_id: str, session_id: str,
                         last: dict[str, Any] | None = DELETED) -> None:
    await app[FEEDBACK].forget(tenant_id, session_id)  # a comment is the customer's words
    await app[HANDOFFS].forget(tenant_id, session_id)
    await app[SESSION_EVENTS].forget(tenant_id, session_id, last)


async def forget_expired(app: web.Application) -> int:
    """Drop what hangs on the sessions that expired since the last call; how many sessions."""
    sessions = app[SESSIONS]
    dropped = 0
    for tenant_id, session_id in await sessions.gone():
        if await sessions.mode(tenant_id, session_id) is not None:
            continue  # the id is in use again
        await forget_session(app, tenant_id, session_id, last=None)
        dropped += 1
    return dropped
