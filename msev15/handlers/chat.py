"""POST /api/v1/chat and POST /api/v1/chat/stream: validate, publish the turn, relay its events."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from msev15.agent.context import REGISTRY, RUNNER
from msev15.agent.coordination import COORDINATION, SessionHeld
from msev15.agent.runner import TurnRefused
from msev15.common.ids import new_id
from msev15.config import SETTINGS
from msev15.events.context import BUS
from msev15.events.turnlog import TURNS, TurnRecord
from msev15.events.types import (
    BusyPolicy,
    ClientTool,
    TurnCompleted,
    TurnFailed,
    TurnRequested,
    retry_after_seconds,
)
from msev15.handlers.client_tools import client_tools
from msev15.handlers.disconnect import watch_departure
from msev15.handlers.errors import ApiError, utc_now_iso
from msev15.handlers.handoff_chat import (
    HeldRecord,
    held_json,
    held_stream,
    hold_applies,
    hold_for_person,
    keep_for_person,
)
from msev15.handlers.jsonbody import json_response
from msev15.handlers.ratelimit import TENANT_COUNTED, check_tenant_rate
from msev15.handlers.streams import SseTranslator, open_stream, relay
from msev15.handlers.validation import ChatRequest, chat_request, json_object
from msev15.logs import service as logs

log = logging.getLogger("api.chat")



def refused(exc: TurnRefused) -> ApiError:
    headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after is not None else None
    return ApiError(exc.status, exc.code, exc.message, headers=headers)


async def start_turn(app: web.Application, tenant_id: str, session_id: str, message: str, *, stream: bool,
                     if_busy: BusyPolicy = "enqueue", counted: bool = False, resumes: str | None = None,
                     tools: tuple[ClientTool, ...] = ()) -> TurnRecord:
    """Publish a new turn and return its record in the turn log. The runner has accepted it when
    ``publish`` returns, or refused it: then an ApiError (503, 409 session_busy, 429 tenant_busy).
    With a shared store the session's other instances are asked first (``if_busy`` holds across
    them).

    While a person holds the session, the message is stored for them and no turn runs: the
    record returned is a :class:`~msev15.handlers.handoff_chat.HeldRecord`, ended already with a
    ``handoff`` event and ``done`` with ``status: with_human`` (see handlers/handoff_chat.py).

    Every front door (REST, SSE, the AG-UI, AI SDK, A2A and MCP adapters) starts turns through here."""
    logs.bind(session_id=session_id, tenant_id=tenant_id)
    if not counted:  # the tenant middleware counted the request already (see handlers/ratelimit.py)
        await check_tenant_rate(app, tenant_id)
    turn = TurnRequested(new_id(), tenant_id, session_id, logs.request_id_var.get(), message, stream, if_busy,
                         resumes, tools)
    coordination = app[COORDINATION]
    hold = hold_applies(app, turn)
    if hold and not coordination.reads_hold:
        held = await hold_for_person(app, turn)  # a person has the session: stored, no turn
        if held is not None:
            return held
    try:
        await coordination.admit(turn, hold=hold)  # reads the mode in the same step when it can
    except SessionHeld as exc:
        return await keep_for_person(app, turn, exc.mode)
    except TurnRefused as exc:
        raise refused(exc) from None
    try:
        app[BUS].publish(turn)
    except TurnRefused as exc:
        await coordination.withdraw(turn)
        raise refused(exc) from None
    record = app[TURNS].get(tenant_id, session_id, turn.turn_id)
    assert record is not None, "an accepted turn is in the turn log"
    return record


async def _chat_request(request: web.Request) -> tuple[ChatRequest, tuple[ClientTool, ...]]:
    body = await json_object(request)
    raw_tools = body.pop("tools", None)  # the caller's own tools (handlers/client_tools.py)
    chat = chat_request(request, body, request.app[SETTINGS].max_message_chars)
    # The registry's names are built only for a request that declares tools: most declare none.
    tools = client_tools(raw_tools, request.app[REGISTRY].tools()) if raw_tools is not None else ()
    return chat, tools


async def _start_turn(request: web.Request, chat: ChatRequest, tools: tuple[ClientTool, ...],
                      stream: bool) -> TurnRecord:
    return await start_turn(request.app, chat.tenant_id, chat.session_id, chat.message, stream=stream,
                            if_busy=chat.if_busy, counted=request.get(TENANT_COUNTED, False), tools=tools)


async def _outcome_unless_gone(request: web.Request, record: TurnRecord) -> TurnCompleted | TurnFailed:
    """The turn's end; if the client leaves first, the turn is cancelled (nobody would read it).

    Leaving shows up either as the connection's loss (see handlers/disconnect.py) or, on servers
    run with ``handler_cancellation`` (aiohttp's test server), as this handler being cancelled.
    Waiting costs one future per turn event (a plain turn has only its tool events and its end)
    and a callback on the connection: no task."""
    runner = request.app[RUNNER]
    waiter: asyncio.Future[None] | None = None
    gone = False

    def left() -> None:
        nonlocal gone
        gone = True
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    unwatch = watch_departure(request, left)
    try:
        while (terminal := record.terminal) is None and not gone:
            waiter = record.next_event()
            await waiter
    except asyncio.CancelledError:
        runner.stop(record, "cancelled" if runner.accepting else "shutting_down")
        raise
    finally:
        unwatch()
    if terminal is not None:
        return terminal
    if runner.stop(record, "cancelled"):
        log.info("Client left before the answer: turn %s cancelled", record.turn_id)
    return await record.outcome()


async def chat(request: web.Request) -> web.Response:
    """Send a message and wait for the whole answer.
    ---
    summary: Chat (non-streaming)
    tags: [chat]
    requestBody:
      required: true
      content:
        application/json:
          schema: {$ref: "#/components/schemas/ChatRequest"}
          example: {session_id: abc-123-def, message: "Where is order ORD-1A2B3C4D?", tenant_id: tenant-001}
    responses:
      "200":
        description: The assistant's answer.
        content:
          application/json:
            schema: {$ref: "#/components/schemas/ChatResponse"}
            example: {session_id: abc-123-def, message: "Order ORD-1A2B3C4D is shipped.",
                      timestamp: "2026-02-19T10:30:00Z", message_count: 4, tenant_id: tenant-001,
                      turn_id: 0d2f9c1e5b7a4e11}
      "409": {$ref: "#/components/responses/TurnStopped"}
      "429": {$ref: "#/components/responses/TenantBusy"}
      "502": {$ref: "#/components/responses/ModelError"}
      "503": {$ref: "#/components/responses/Unavailable"}
    """
    chat_req, tools = await _chat_request(request)
    record = await _start_turn(request, chat_req, tools, stream=False)
    if isinstance(record, HeldRecord):  # a person has the session: stored, no turn
        return json_response(held_json(chat_req, record))
    event = await _outcome_unless_gone(request, record)
    if isinstance(event, TurnFailed):
        wait = event.retry_after  # the model's own Retry-After (a 429 upstream)
        headers = None if wait is None else {"Retry-After": str(retry_after_seconds(wait))}
        raise ApiError(event.status, event.error, event.message, event.detail, headers=headers)
    reply = {
        "session_id": chat_req.session_id,
        "message": event.message,
        "timestamp": utc_now_iso(),
        "message_count": event.message_count,
        "tenant_id": chat_req.tenant_id,
        "turn_id": record.turn_id,
        "profile_version": event.profile_version,
    }
    if event.status != "completed":  # waiting for a decision (see .../pending), or with a person
        reply["status"] = event.status
    if event.status == "waiting":
        reply["pending"] = list(event.pending)
    return json_response(reply)


async def chat_stream(request: web.Request) -> web.StreamResponse:
    """Send a message and receive the answer as Server-Sent Events.
    ---
    summary: Chat (streaming, Server-Sent Events)
    description: |
      Each event is `id: {turn_id}:{seq}` (seq 1, 2, 3, ...) and one JSON object on its `data:`
      line, `type` first: `token`, `tool_call`, `tool_result`, then exactly one `done` or `error`.
      `: ping` comments keep idle proxies open. The `X-Turn-ID` header names the turn: after a
      dropped connection, resume with `GET /api/v1/sessions/{session_id}/turns/{turn_id}/events`
      and `Last-Event-ID`. A client that disconnects ends its stream, never its turn.
    tags: [chat]
    requestBody:
      required: true
      content:
        application/json:
          schema: {$ref: "#/components/schemas/ChatRequest"}
          example: {session_id: abc-123, message: Hello, tenant_id: tenant-001}
    responses:
      "200":
        description: An event stream.
        headers:
          X-Turn-ID: {description: "The turn's id, for resume, status and cancel.", schema: {type: string}}
        content:
          text/event-stream:
            schema: {$ref: "#/components/schemas/SseFrame"}
            example: |
              id: t1:1
              data: {"type": "token", "content": "Hello", "session_id": "abc-123"}

              id: t1:2
              data: {"type": "token", "content": " there!", "session_id": "abc-123"}

              id: t1:3
              data: {"type": "done", "session_id": "abc-123", "message_count": 4, "turn_id": "t1"}
      "409": {$ref: "#/components/responses/TurnStopped"}
      "429": {$ref: "#/components/responses/TenantBusy"}
      "503": {$ref: "#/components/responses/Unavailable"}
    """
    chat_req, tools = await _chat_request(request)
    record = await _start_turn(request, chat_req, tools, stream=True)
    if isinstance(record, HeldRecord):  # a person has the session: stored, no turn
        return await held_stream(request, record)
    async with open_stream(request, record) as resp:
        await relay(record, resp, SseTranslator(record))
    return resp
