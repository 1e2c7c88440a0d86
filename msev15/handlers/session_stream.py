"""``GET /api/v1/sessions/{session_id}/events``: everything that happens in a session from now on,
as Server-Sent Events with the session's own ids (``id: 7``).

Every turn's events (each with its ``turn_id``, whichever protocol started the turn), what an
operator writes (``human_message``), what the customer writes while a person holds the session
(``customer_message``) and each change of ``mode``. It is how a customer hears an operator, and how
an operator's console follows a conversation. Send ``Last-Event-ID`` to continue after an id,
exactly once and in order, while the events are retained (STREAM_RETENTION_SECONDS). The stream
stays open (``: ping`` comments keep proxies from closing it) until the client leaves, the
session is deleted (a last ``session_deleted`` event) or the service shuts down (once the turns it
accepted have ended, their events included).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web

from msev15.agent.context import RUNNER
from msev15.config import SETTINGS
from msev15.handlers.validation import check_id, invalid, tenant_from_query
from msev15.logs import service as logs
from msev15.store.session_events import SESSION_EVENTS

MAX_ID = 10**15


def _after(request: web.Request) -> int | None:
    raw = request.headers.get("Last-Event-ID")
    if raw is None:
        return None
    raw = raw.strip()
    if not raw.isascii() or not raw.isdigit() or int(raw) > MAX_ID:
        raise invalid("Last-Event-ID must be an id this stream sent (a whole number)", "Last-Event-ID")
    return int(raw)


async def session_events(request: web.Request) -> web.StreamResponse:
    """Follow a session.
    ---
    summary: Session stream (Server-Sent Events)
    description: |
      Everything that happens in the session from now on, or after `Last-Event-ID`: every turn's
      events (`token`, `tool_call`, `tool_result`, `handoff`, `done`, `error`, each with `turn_id`),
      `human_message` (an operator wrote), `customer_message` (the customer wrote while a person
      holds the session), `mode` (who answers now, and who made it so), and a last
      `session_deleted`. Ids are the session's own (1, 2, 3, ...).
    tags: [sessions]
    parameters:
      - {in: path, name: session_id, required: true, schema: {$ref: "#/components/schemas/Id"}}
      - {in: query, name: tenant_id, required: false, schema: {$ref: "#/components/schemas/Id"}}
      - {in: header, name: Last-Event-ID, required: false, schema: {type: string, pattern: "^[0-9]+$"}}
    responses:
      "200":
        description: An event stream.
        content:
          text/event-stream:
            schema: {$ref: "#/components/schemas/SessionStreamEvent"}
    """
    session_id = check_id(request.match_info["session_id"], "session_id")
    tenant_id = tenant_from_query(request)
    logs.bind(session_id=session_id, tenant_id=tenant_id)
    after = _after(request)
    log = request.app[SESSION_EVENTS]
    if after is None:
        after = await log.last_id(tenant_id, session_id)  # from now on
    ping = request.app[SETTINGS].sse_ping_seconds
    runner = request.app[RUNNER]
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                                       "X-Accel-Buffering": "no"})
    await resp.prepare(request)
    # At shutdown the stream goes on while accepted turns drain, then ends with what they wrote
    # (a client reconnects elsewhere with Last-Event-ID); it does not wait out a ping interval.
    drained = asyncio.ensure_future(runner.drained())
    reading: asyncio.Future[list[tuple[int, dict[str, Any]]]] | None = None
    try:
        await resp.write(b": open\n\n")
        while True:
            reading = asyncio.ensure_future(log.read(tenant_id, session_id, after, ping))
            await asyncio.wait((reading, drained), return_when=asyncio.FIRST_COMPLETED)
            if not reading.done():
                reading.cancel()
                entries = await log.read(tenant_id, session_id, after, 0)  # the last of them
            else:
                entries = reading.result()
            if entries:
                after = entries[-1][0]
                await resp.write(_frames(entries))
                if any(event.get("type") == "session_deleted" for _, event in entries):
                    break
            if drained.done():
                break
            if not entries:
                await resp.write(b": ping\n\n")
    except ConnectionResetError:
        return resp  # the client left
    finally:  # the client left or the handler was cancelled: nothing waits on our behalf
        drained.cancel()
        if reading is not None:
            reading.cancel()
    await resp.write_eof()
    return resp


def _frames(entries: list[tuple[int, dict[str, Any]]]) -> bytes:
    return b"".join(b"id: %d\ndata: %s\n\n" % (seq, json.dumps(event, ensure_ascii=False).encode(
        "utf-8", "backslashreplace")) for seq, event in entries)
