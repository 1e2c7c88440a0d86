"""Server-Sent Events of a turn: "replay from seq k, then follow" over the turn log.

Every event frame is ``id: {turn_id}:{seq}`` and one ``data:`` line of JSON (``type`` first);
keep-alive comments (``: ping``) carry no id. The same relay serves a new stream (k = 0), a
``Last-Event-ID`` resume and any number of readers of one turn, for every protocol: each
protocol supplies a :class:`Translator` (its frames for each turn event) and nothing else.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator, Mapping
from typing import Protocol

from aiohttp import web
from aiohttp_sse import EventSourceResponse, sse_response

from msev15.config import SETTINGS
from msev15.events.turnlog import TurnView
from msev15.events.types import TurnEvent, TurnFailed, to_wire

log = logging.getLogger("api.chat")

TURN_ID_HEADER = "X-Turn-ID"

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


class Translator(Protocol):
    """A protocol's mapping of turn events to frames: all a protocol adapter supplies to stream a
    turn (native SSE, AG-UI, AI SDK, and any protocol added later). Following the turn, resuming,
    batching writes and a gone client are :func:`relay`'s."""

    def start(self) -> list[bytes]:
        """Frames before the turn's first event (none for native SSE)."""
        ...

    def translate(self, seq: int, event: TurnEvent, out: list[bytes]) -> None:
        """Append the frames of the turn's event number ``seq``."""
        ...

    def failure(self) -> list[bytes]:
        """The frames that end the stream when the relay itself fails (its own terminal event)."""
        ...


class SseTranslator:
    """Native SSE: each event as ``id: {turn_id}:{seq}`` and its JSON."""

    def __init__(self, record: TurnView) -> None:
        self.record = record

    def start(self) -> list[bytes]:
        return []

    def translate(self, seq: int, event: TurnEvent, out: list[bytes]) -> None:
        out.append(frame(self.record.turn_id, seq, event))

    def failure(self) -> list[bytes]:
        # No id: it is not one of the turn's events.
        record = self.record
        failed = TurnFailed(record.turn_id, record.tenant_id, record.session_id, record.request_id,
                            "internal_error", "The stream failed. Resume it with Last-Event-ID or read the history.")
        return [b"data: " + json.dumps(to_wire(failed)).encode() + b"\n\n"]


def open_stream(request: web.Request, record: TurnView, headers: Mapping[str, str] | None = None,
                sep: str | None = None) -> contextlib.AbstractAsyncContextManager[TurnStream]:
    """The SSE response, not yet prepared (``async with`` prepares it and stops its pings), with
    keep-alive comments and the turn id header. The protocol streams pass ``sep="\\n"``: some of
    their clients split events on a blank ``\\n\\n`` only."""
    ping = request.app[SETTINGS].sse_ping_seconds
    return sse_response(request, allow_all_methods=True, ping_interval=ping, sep=sep,
                        headers={TURN_ID_HEADER: record.turn_id, **(headers or {})},
                        send_timeout=SEND_TIMEOUT_SECONDS, response_cls=TurnStream)


async def follow(record: TurnView, after: int = 0) -> AsyncIterator[tuple[int, list[TurnEvent]]]:
    """The turn's events past seq ``after`` as (seq of the batch's first event, batch), in batches
    as they arrive, up to its terminal event. "Replay from k, then follow": a new stream is k = 0."""
    seq = after
    while True:
        await record.wait(seq)
        events = record.events
        end = len(events)
        if end > seq:
            batch, first, seq = events[seq:end], seq + 1, end
            yield first, batch
        if record.finished and seq >= len(record.events):
            return


async def relay(record: TurnView, resp: TurnStream, translator: Translator, after: int = 0) -> None:
    """Write the turn's events with seq > ``after`` through ``translator`` and follow it to its
    terminal event; the one relay loop of every protocol.

    A gone or stalled client ends the relay, not the turn: it can come back (``Last-Event-ID``,
    the AI SDK's resume, A2A's resubscribe). Once headers are out there is no envelope: a failure
    of the relay itself ends the stream with the translator's failure frames.
    """
    frames = translator.start()
    try:
        async for first, batch in follow(record, after):
            for offset, event in enumerate(batch):
                translator.translate(first + offset, event, frames)
            await resp.send_frames(frames)
            frames = []
        if frames:
            await resp.send_frames(frames)
    except (ConnectionResetError, TimeoutError):
        log.info("Stream client went away; the turn continues and can be resumed")
    except Exception:
        log.exception("stream relay failed")
        with contextlib.suppress(Exception):
            await resp.send_frames(translator.failure())
