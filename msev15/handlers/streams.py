"""Server-Sent Events of a turn: "replay from seq k, then follow" over the turn log.

Every event frame is ``id: {turn_id}:{seq}`` and one ``data:`` line of JSON (``type`` first);
keep-alive comments (``: ping``) carry no id. The same relay serves a new stream (k = 0), a
``Last-Event-ID`` resume and any number of readers of one turn.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Mapping

from aiohttp import web
from aiohttp_sse import EventSourceResponse, sse_response

from msev15 import keys
from msev15.events.turnlog import TurnView
from msev15.events.types import TurnEvent, TurnFailed, to_wire

log = logging.getLogger("api.chat")

SEND_TIMEOUT_SECONDS = 60.0


class TurnStream(EventSourceResponse):
    """aiohttp-sse's response with a lean path for our frames.

    Our data lines are single-line JSON, so they need none of ``send()``'s per-call line splitting
    and buffering; several events waiting go out in one write. A stalled reader is still cut
    off: ``send_timeout`` sets TCP_USER_TIMEOUT on the socket (Linux).
    """

    async def send_frames(self, frames: list[bytes]) -> None:
        try:
            await self.write(b"".join(frames))
        except ConnectionResetError:
            self.stop_streaming()
            raise


def frame(turn_id: str, seq: int, event: TurnEvent) -> bytes:
    # A model may send a lone surrogate ("\\ud800" in its JSON); UTF-8 cannot encode it, so it is
    # written back as that same JSON escape instead of failing the stream before its terminal event.
    text = json.dumps(to_wire(event), ensure_ascii=False)
    return b"id: %s:%d\ndata: %s\n\n" % (turn_id.encode(), seq, text.encode("utf-8", "backslashreplace"))


def open_stream(request: web.Request,
                headers: Mapping[str, str] | None = None) -> contextlib.AbstractAsyncContextManager[TurnStream]:
    """The SSE response, not yet prepared (``async with`` prepares it and stops its pings)."""
    ping = request.app[keys.SETTINGS].sse_ping_seconds
    return sse_response(request, allow_all_methods=True, ping_interval=ping, headers=headers,
                        send_timeout=SEND_TIMEOUT_SECONDS, response_cls=TurnStream)


async def relay(record: TurnView, resp: TurnStream, after: int = 0) -> None:
    """Write the turn's events with seq > ``after`` and follow it to its terminal event.

    A gone or stalled client ends the relay, not the turn: it can come back with ``Last-Event-ID``.
    Once headers are out there is no envelope: a failure of the relay itself ends the stream with
    an ``error`` event (no id: it is not one of the turn's events).
    """
    seq = after
    turn_id = record.turn_id
    try:
        while True:
            await record.wait(seq)
            events = record.events
            end = len(events)
            if end > seq:
                frames = [frame(turn_id, i + 1, events[i]) for i in range(seq, end)]
                seq = end
                try:
                    await resp.send_frames(frames)
                except (ConnectionResetError, TimeoutError):
                    log.info("Stream client went away; the turn continues and can be resumed")
                    return
            if record.finished and seq >= len(record.events):
                return
    except Exception:
        log.exception("stream relay failed")
        failed = TurnFailed(turn_id, record.tenant_id, record.session_id, record.request_id, "internal_error",
                            "The stream failed. Resume it with Last-Event-ID or read the history.")
        with contextlib.suppress(Exception):
            await resp.send_frames([b"data: " + json.dumps(to_wire(failed)).encode() + b"\n\n"])
