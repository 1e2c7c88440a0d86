"""Connection limits and parser-level errors, below the application.

aiohttp's request handler (``web_protocol.RequestHandler``) owns a connection before any
middleware runs, so three protections live here, in a subclass of it that ``msev15 serve``
installs through :class:`GuardedRunner`:

- **Request head deadline**: a connection must send a whole request head within
  HTTP_HEADER_TIMEOUT_SECONDS of connecting, or it is closed (idle and trickling connections
  alike). Idle keep-alive connections close after HTTP_KEEPALIVE_SECONDS (aiohttp's own timer).
- **Connection cap**: at HTTP_MAX_CONNECTIONS a new connection first makes room by closing the
  oldest connection that has not sent a request head yet; if every connection is busy with a
  request, the new one gets a 503 envelope and is closed. Descriptors never run out, and a health
  probe still gets in while idle connections hog the cap.
- **Parser errors** (malformed request lines, header floods) answer with the envelope, a fresh
  ``X-Request-ID`` and a fixed sentence: nothing of the request is echoed. 431 for a head that is
  too large (a line past its limit, too many headers), 400 otherwise.

``lost`` is a future that completes when the client's connection closes: the plain chat handler
waits on it to cancel a turn nobody will read (see handlers/disconnect.py).
"""

from __future__ import annotations

import asyncio
import json
import logging
import resource
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError, LineTooLong
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from msev15.common.ids import new_id
from msev15.handlers.errors import REQUEST_ID_HEADER, utc_now_iso

log = logging.getLogger("app.connections")


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    header_timeout: float = 10.0
    max_connections: int = 0  # 0: half the open-files limit

    def cap(self) -> int:
        if self.max_connections:
            return self.max_connections
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        return max(16, soft // 2)


class ConnectionStats:
    """Counters for the metrics endpoint (plain ints: nothing on the hot path but an increment)."""

    def __init__(self) -> None:
        self.open = 0
        self.shed = 0  # connections closed to make room, or refused, at the cap
        self.header_timeouts = 0
        self.parser_errors = 0


# Made by create_app (the gauges read it), filled by GuardedRunner under ``msev15 serve``.
CONNECTIONS = web.AppKey("msev15.connections", ConnectionStats)


def _envelope_bytes(error: str, message: str) -> tuple[bytes, str]:
    request_id = new_id()
    body = json.dumps({"error": error, "message": message, "request_id": request_id,
                       "timestamp": utc_now_iso()}).encode()
    return body, request_id


def _parser_status(exc: BaseException | None) -> tuple[int, str, str]:
    """431 for a request head that is too large (a line past its limit, too many headers), 400
    otherwise. The parser's own message quotes the request, so it is never sent back."""
    text = str(getattr(exc, "message", "") or "").lower()
    if isinstance(exc, LineTooLong) or "too many headers" in text:
        return 431, "headers_too_large", "The request's head (request line or header fields) is too large."
    return 400, "bad_request", "The request could not be parsed as HTTP/1.1."


class GuardedProtocol(RequestHandler):
    __slots__ = ("_head_timer", "_limits", "_stats", "lost")

    def __init__(self, manager: GuardedServer, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._limits = manager.limits
        self._stats = manager.stats
        self.lost: asyncio.Future[None] = kwargs["loop"].create_future()
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        manager = self._manager
        assert isinstance(manager, GuardedServer)
        if len(manager.connections_open) >= manager.cap and not manager.make_room():
            self._stats.shed += 1
            body, request_id = _envelope_bytes("too_many_connections",
                                               "The service has too many open connections; retry shortly.")
            head = (f"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {len(body)}\r\nRetry-After: 1\r\n{REQUEST_ID_HEADER}: {request_id}\r\n"
                    f"Connection: close\r\n\r\n").encode()
            transport.write(head + body)  # type: ignore[attr-defined]
            transport.close()
            self.lost.set_result(None)
            return
        super().connection_made(transport)
        self._stats.open += 1
        manager.connections_open[self] = None
        manager.waiting_for_head[self] = None
        self._head_timer = self._loop.call_later(self._limits.header_timeout, self._head_deadline)

    def _head_deadline(self) -> None:
        self._head_timer = None
        if self._request_count == 0 and self.transport is not None:
            self._stats.header_timeouts += 1
            self.force_close()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._request_count and self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
            manager = self._manager
            if isinstance(manager, GuardedServer):
                manager.waiting_for_head.pop(self, None)

    def connection_lost(self, exc: BaseException | None) -> None:
        manager = self._manager
        if isinstance(manager, GuardedServer) and self in manager.connections_open:
            del manager.connections_open[self]
            manager.waiting_for_head.pop(self, None)
            self._stats.open -= 1
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        if not self.lost.done():
            self.lost.set_result(None)
        super().connection_lost(exc)

    def handle_error(self, request: BaseRequest, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        if request.writer.output_size > 0:
            raise ConnectionError("Response is sent already, cannot send another response with the error message")
        malformed = isinstance(exc, HttpProcessingError) or status == 400
        if malformed:
            self._stats.parser_errors += 1
            status, code, text = _parser_status(exc)
        elif status == 504:
            code, text = "timeout", "The request took too long."
        else:
            code, text = "internal_error", "An unexpected error occurred. Quote the request id when reporting it."
        body, request_id = _envelope_bytes(code, text)
        ids = {"request_id": request_id}  # the log line names the id the client got
        if malformed:
            log.warning("Malformed request from %s: %s", request.remote, code, extra=ids)
        elif status != 504:
            log.error("Error handling request from %s", request.remote, exc_info=exc, extra=ids)
        resp = web.Response(status=status, body=body, content_type="application/json",
                            headers={REQUEST_ID_HEADER: request_id})
        resp.force_close()
        return resp


class GuardedServer(web.Server):
    """aiohttp's Server making :class:`GuardedProtocol` connections."""

    limits: ConnectionLimits
    stats: ConnectionStats
    cap: int
    connections_open: dict[GuardedProtocol, None]
    waiting_for_head: OrderedDict[GuardedProtocol, None]

    def guard(self, limits: ConnectionLimits, stats: ConnectionStats) -> None:
        self.limits, self.stats, self.cap = limits, stats, limits.cap()
        self.connections_open = {}
        self.waiting_for_head = OrderedDict()

    def __call__(self) -> RequestHandler:
        protocol = GuardedProtocol(self, loop=self._loop, **self._kwargs)
        return protocol

    def make_room(self) -> bool:
        """Close the oldest connection still without a request head; False if there is none."""
        while self.waiting_for_head:
            victim, _ = self.waiting_for_head.popitem(last=False)
            if victim._request_count == 0 and victim.transport is not None:
                self.stats.shed += 1
                victim.force_close()
                victim.connection_lost(None)  # free its place now, not on the next loop turn
                return True
        return False


class GuardedRunner(web.AppRunner):
    """The AppRunner ``msev15 serve`` uses: aiohttp's, with :class:`GuardedServer` connections."""

    def __init__(self, app: web.Application, limits: ConnectionLimits, stats: ConnectionStats,
                 **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self._limits = limits
        self._stats = stats

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        # The app builds its Server (with its own request factory and settings); only the
        # protocol it makes changes, so take that Server over rather than rebuild it.
        server.__class__ = GuardedServer
        assert isinstance(server, GuardedServer)
        server.guard(self._limits, self._stats)
        return server
