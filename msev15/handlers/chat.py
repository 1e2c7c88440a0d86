"""POST /api/v1/chat and POST /api/v1/chat/stream: validate, publish the turn, relay its events."""

from __future__ import annotations

import contextlib
import json
import logging

from aiohttp import web
from aiohttp_sse import EventSourceResponse, sse_response

from msev15 import keys, logs
from msev15.common.ids import new_id
from msev15.events.bus import BusClosed, EventBus, Subscription
from msev15.events.types import (
    CLIENT_EVENTS,
    TERMINAL,
    TurnFailed,
    TurnRequested,
    to_wire,
)
from msev15.handlers.errors import ApiError, utc_now_iso
from msev15.handlers.validation import ChatRequest, chat_request, json_object

log = logging.getLogger("api.chat")

SEND_TIMEOUT_SECONDS = 60.0


class TurnStream(EventSourceResponse):
    """aiohttp-sse's response with a lean path for our frames.

    Our data lines are single-line JSON, so they need none of ``send()``'s per-call line splitting
    and buffering; several events waiting in the queue go out in one write. A stalled reader is
    still cut off: ``send_timeout`` sets TCP_USER_TIMEOUT on the socket (Linux).
    """

    async def send_frames(self, frames: list[bytes]) -> None:
        try:
            await self.write(b"".join(frames))
        except ConnectionResetError:
            self.stop_streaming()
            raise


def _frame(event: object) -> bytes:
    # A model may send a lone surrogate ("\\ud800" in its JSON); UTF-8 cannot encode it, so it is
    # written back as that same JSON escape instead of failing the stream before its terminal event.
    text = json.dumps(to_wire(event), ensure_ascii=False)  # type: ignore[arg-type]
    return b"data: " + text.encode("utf-8", "backslashreplace") + b"\n\n"


async def _accept_turn(request: web.Request, stream: bool) -> tuple[EventBus, ChatRequest, TurnRequested]:
    app = request.app
    if app[keys.STATE].shutting_down:
        raise _shutting_down()
    chat = chat_request(await json_object(request), app[keys.SETTINGS].max_message_chars)
    logs.bind(session_id=chat.session_id, tenant_id=chat.tenant_id)
    turn = TurnRequested(new_id(), chat.tenant_id, chat.session_id, logs.request_id_var.get(),
                         chat.message, stream)
    return app[keys.BUS], chat, turn


def _shutting_down() -> ApiError:
    return ApiError(503, "shutting_down", "The service is shutting down and accepts no new messages.",
                    headers={"Retry-After": "5"})


def _publish(bus: EventBus, turn: TurnRequested) -> None:
    try:
        bus.publish(turn)
    except BusClosed:
        raise _shutting_down() from None


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
            example: {session_id: abc-123-def, message: "Order ORD-1A2B3C4D is shipped.", timestamp: "2026-02-19T10:30:00Z", message_count: 4, tenant_id: tenant-001}
      "502": {$ref: "#/components/responses/ModelError"}
      "503": {$ref: "#/components/responses/Unavailable"}
    """
    bus, chat_req, turn = await _accept_turn(request, stream=False)
    with bus.subscribe(turn_id=turn.turn_id, types=TERMINAL) as sub:
        _publish(bus, turn)
        event = await sub.get()
    if isinstance(event, TurnFailed):
        raise ApiError(event.status, event.error, event.message)
    return web.json_response({
        "session_id": chat_req.session_id,
        "message": event.message,
        "timestamp": utc_now_iso(),
        "message_count": event.message_count,
        "tenant_id": chat_req.tenant_id,
    })


async def chat_stream(request: web.Request) -> web.StreamResponse:
    """Send a message and receive the answer as Server-Sent Events.
    ---
    summary: Chat (streaming, Server-Sent Events)
    description: |
      One JSON object per `data:` line, `type` first: `token`, `tool_call`, `tool_result`, then
      exactly one `done` or `error`. `: ping` comments keep idle proxies open.
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
        content:
          text/event-stream:
            schema:
              description: >
                One Server-Sent Event. Its `data` line is one JSON object, a
                `#/components/schemas/StreamEvent` (`type` first).
              type: object
              required: [data]
              properties:
                data: {type: string, pattern: '^[{]"type": "(token|tool_call|tool_result|done|error)"'}
            example: |
              data: {"type": "token", "content": "Hello", "session_id": "abc-123"}

              data: {"type": "token", "content": " there!", "session_id": "abc-123"}

              data: {"type": "done", "session_id": "abc-123", "message_count": 4}
      "503": {$ref: "#/components/responses/Unavailable"}
    """
    bus, _, turn = await _accept_turn(request, stream=True)
    with bus.subscribe(turn_id=turn.turn_id, types=CLIENT_EVENTS) as sub:
        _publish(bus, turn)
        ping = request.app[keys.SETTINGS].sse_ping_seconds
        async with sse_response(request, allow_all_methods=True, ping_interval=ping,
                                send_timeout=SEND_TIMEOUT_SECONDS, response_cls=TurnStream) as resp:
            try:
                await _relay(sub, resp)
            except Exception:
                # Headers are out, so no envelope now: end the stream with an error event instead
                # of leaving the client waiting. The turn itself goes on and is saved.
                log.exception("stream relay failed")
                failed = TurnFailed(turn.turn_id, turn.tenant_id, turn.session_id, turn.request_id,
                                    "internal_error", "The stream failed. Read the answer from the history.")
                with contextlib.suppress(Exception):
                    await resp.send_frames([_frame(failed)])
    return resp


async def _relay(sub: Subscription, resp: TurnStream) -> None:
    """Write the turn's events until its terminal one. A gone client ends the relay, not the turn."""
    while True:
        event = await sub.get()
        frames = [_frame(event)]
        done = isinstance(event, TERMINAL)
        while not done and sub.pending():
            event = sub.get_nowait()
            frames.append(_frame(event))
            done = isinstance(event, TERMINAL)
        try:
            await resp.send_frames(frames)
        except (ConnectionResetError, TimeoutError):
            log.info("Stream client went away; the turn continues and will be saved")
            return
        if done:
            return
