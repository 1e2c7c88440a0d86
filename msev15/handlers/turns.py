"""A session's turns: resume a turn's event stream, read its status, cancel it or the whole session.

The same answer for an unknown turn, another tenant's and another session's (404
``turn_not_found``): nothing tells a caller that a turn id exists elsewhere.
"""

from __future__ import annotations

import re

from aiohttp import web

from msev15.agent.context import RUNNER
from msev15.agent.coordination import COORDINATION
from msev15.events.turnlog import TURNS, TurnView
from msev15.handlers.errors import ApiError
from msev15.handlers.streams import SseTranslator, open_stream, relay
from msev15.handlers.validation import check_id, decimal, invalid, tenant_from_query
from msev15.logs import service as logs

_LAST_EVENT_ID = re.compile(r"^(?P<turn>[^:\s]+):(?P<seq>[0-9]{1,9})$")
MAX_SEQ = 999_999_999
# As documented: what _LAST_EVENT_ID accepts (the turn part must also be this turn's id).
LAST_EVENT_ID_PATTERN = r"^[^:\s]+:[0-9]{1,9}$"


def _session(request: web.Request) -> tuple[str, str]:
    session_id = check_id(request.match_info["session_id"], "session_id")
    tenant_id = tenant_from_query(request)
    logs.bind(session_id=session_id, tenant_id=tenant_id)
    return tenant_id, session_id


async def _turn(request: web.Request) -> TurnView:
    tenant_id, session_id = _session(request)
    turn_id = request.match_info["turn_id"]
    record = await request.app[TURNS].find(tenant_id, session_id, turn_id)
    if record is None:
        raise ApiError(404, "turn_not_found",
                       "No such turn in this session, or its events are no longer kept "
                       "(they are kept while it runs and for STREAM_RETENTION_SECONDS after it ends).")
    return record


def resume_point(request: web.Request, turn_id: str) -> int:
    """The seq to resume after: ``Last-Event-ID: {turn_id}:{seq}`` (as EventSource sends it) or
    ``?after={seq}``; 0 (the whole turn) when neither is given."""
    header = request.headers.get("Last-Event-ID")
    if header is not None and header.strip():
        match = _LAST_EVENT_ID.fullmatch(header.strip())
        if match is None or match["turn"] != turn_id:
            raise invalid(f"Last-Event-ID must be {turn_id}:<seq>, the id of an event of this turn",
                          "Last-Event-ID")
        return int(match["seq"])
    raw = request.query.get("after")
    if raw is None:
        return 0
    after = decimal(raw)
    if after is None or after > MAX_SEQ:
        raise invalid(f"after must be an integer from 0 to {MAX_SEQ} in ASCII digits (an event seq)", "after")
    return after


async def turn_events(request: web.Request) -> web.StreamResponse:
    """Resume (or re-read) a turn's event stream.
    ---
    summary: Turn events (resume a stream)
    description: |
      Server-Sent Events of one turn, usable by a browser `EventSource`. With
      `Last-Event-ID: {turn_id}:{seq}` (or `?after={seq}`) it sends every event with a higher
      seq, in order, then follows the live turn to its terminal event and ends; without either
      it sends the turn from seq 1. Events are kept while the turn runs and for
      `STREAM_RETENTION_SECONDS` after it ends. Resuming a finished turn after its last event
      (its terminal one) answers 204 No Content, which also stops an `EventSource` from
      reconnecting; a seq past the last event of a finished turn is a 400.
    tags: [turns]
    parameters:
      - {in: path, name: session_id, required: true, schema: {$ref: "#/components/schemas/Id"}}
      - {in: path, name: turn_id, required: true, schema: {type: string}}
      - {in: query, name: tenant_id, required: false, schema: {$ref: "#/components/schemas/Id"}}
      - in: query
        name: after
        required: false
        description: Resume after this seq (ASCII digits). Past the last seq of a finished turn it is a 400.
        schema: {type: integer, minimum: 0, maximum: 999999999}
      - in: header
        name: Last-Event-ID
        required: false
        description: "`{turn_id}:{seq}` naming this turn (as an EventSource sends it); it wins over `after`.
          Another turn's id, or a seq past the last of a finished turn, is a 400."
        schema: {type: string, pattern: '^[^:\\s]+:[0-9]{1,9}$', example: "t1:3"}
    responses:
      "200":
        description: The turn's events (the same frames as `POST /api/v1/chat/stream`).
        content:
          text/event-stream:
            schema: {$ref: "#/components/schemas/SseFrame"}
      "204": {description: The turn has ended and the client has its last event; nothing more to send.}
      "400": {$ref: "#/components/responses/BadRequest"}
      "404": {$ref: "#/components/responses/TurnNotFound"}
    """
    record = await _turn(request)
    after = resume_point(request, record.turn_id)
    if record.finished and after >= record.last_seq:
        if after > record.last_seq:  # an id this turn never sent
            raise invalid(f"this turn's events end at seq {record.last_seq}; Last-Event-ID or after must not be "
                          "past it", "Last-Event-ID" if request.headers.get("Last-Event-ID", "").strip() else "after")
        # The client has the terminal event already. 204 ends the stream for good: an EventSource
        # that reconnects on its own after a stream closes stops reconnecting on a 204.
        return web.Response(status=204, headers={"X-Turn-ID": record.turn_id})
    async with open_stream(request, record) as resp:
        await relay(record, resp, SseTranslator(record), after)
    return resp


async def turn_status(request: web.Request) -> web.Response:
    """A turn's status.
    ---
    summary: Turn status
    tags: [turns]
    parameters:
      - {in: path, name: session_id, required: true, schema: {$ref: "#/components/schemas/Id"}}
      - {in: path, name: turn_id, required: true, schema: {type: string}}
      - {in: query, name: tenant_id, required: false, schema: {$ref: "#/components/schemas/Id"}}
    responses:
      "200":
        description: The turn.
        content:
          application/json:
            schema: {$ref: "#/components/schemas/TurnStatus"}
            example: {turn_id: t1, session_id: abc-123, tenant_id: tenant-001, status: completed, last_seq: 12,
                      message_count: 4}
      "404": {$ref: "#/components/responses/TurnNotFound"}
    """
    return web.json_response((await _turn(request)).status_view())


async def cancel_turn(request: web.Request) -> web.Response:
    """Cancel a queued or running turn.
    ---
    summary: Cancel a turn
    description: |
      The turn ends promptly with one `{"type": "error", "error": "cancelled"}` event: a model
      stream stops at once; a tool call already running may finish (bounded by its timeout) but
      the model never sees its result. Tool calls that completed stay in the history with their
      results and a short note; if none did, the turn leaves no trace in the history.
    tags: [turns]
    parameters:
      - {in: path, name: session_id, required: true, schema: {$ref: "#/components/schemas/Id"}}
      - {in: path, name: turn_id, required: true, schema: {type: string}}
      - {in: query, name: tenant_id, required: false, schema: {$ref: "#/components/schemas/Id"}}
    responses:
      "202":
        description: The turn is being cancelled.
        content:
          application/json:
            schema: {$ref: "#/components/schemas/Cancelling"}
            example: {turn_id: t1, status: cancelling}
      "404": {$ref: "#/components/responses/TurnNotFound"}
      "409": {$ref: "#/components/responses/TurnFinished"}
    """
    record = await _turn(request)
    if record.status == "waiting":  # its waiting calls are settled as cancelled and committed
        if await request.app[RUNNER].waiting.close(record.tenant_id, record.session_id, record.turn_id, "cancelled"):
            return web.json_response({"turn_id": record.turn_id, "status": "cancelling"}, status=202)
    if not await request.app[COORDINATION].cancel(record, "cancelled"):
        raise ApiError(409, "turn_finished", f"The turn has already ended ({record.status}).",
                       turn_id=record.turn_id, turn_status=record.status)
    return web.json_response({"turn_id": record.turn_id, "status": "cancelling"}, status=202)


async def cancel_session(request: web.Request) -> web.Response:
    """Cancel the session's running turn and every queued one.
    ---
    summary: Cancel a session's turns
    tags: [turns]
    parameters:
      - {in: path, name: session_id, required: true, schema: {$ref: "#/components/schemas/Id"}}
      - {in: query, name: tenant_id, required: false, schema: {$ref: "#/components/schemas/Id"}}
    responses:
      "202":
        description: How many turns are being cancelled (0 when the session is idle).
        content:
          application/json:
            schema: {$ref: "#/components/schemas/SessionCancelled"}
            example: {session_id: abc-123, cancelled: 2}
    """
    tenant_id, session_id = _session(request)
    cancelled = await request.app[COORDINATION].cancel_session(tenant_id, session_id, "cancelled")
    if await request.app[RUNNER].waiting.close(tenant_id, session_id, None, "cancelled"):
        cancelled += 1  # the paused turn: its waiting calls are settled as cancelled
    return web.json_response({"session_id": session_id, "cancelled": cancelled}, status=202)
