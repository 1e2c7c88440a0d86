"""Connections as ``msev15 serve`` runs them (GuardedRunner): idle and slow connections closed on
time while health answers, a connection cap that sheds idle connections first, parser-level
errors in the envelope, and repeated errors logged once per interval."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable

import aiohttp
import pytest

from msev15.logs.repeat import RepeatFilter
from msev15.server.connections import CONNECTIONS, GuardedServer
from tests.complaints.server import eventually
from tests.limits.conftest import Served

ServedFactory = Callable[..., Awaitable[Served]]
CLOSE = b"Host: localhost\r\nConnection: close\r\n"
HEALTH = b"GET /health HTTP/1.1\r\n" + CLOSE + b"\r\n"


def _split(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), headers, body


async def _closed_after(served: Served, send: Callable[[asyncio.StreamWriter], Awaitable[None]] | None,
                        limit: float) -> tuple[float, bytes]:
    """Open a connection, run ``send`` (or send nothing); seconds until the server closes it."""
    reader, writer = await asyncio.open_connection(served.host, served.port)
    started = time.monotonic()
    sender = asyncio.ensure_future(send(writer)) if send else None
    try:
        try:
            data = await asyncio.wait_for(reader.read(), limit)
        except ConnectionResetError:  # closed while the client was still sending: a reset
            data = b""
        return time.monotonic() - started, data
    finally:
        if sender is not None:
            sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)
        writer.close()


# --- parser-level errors ----------------------------------------------------------------------

FLOODS = {
    "200 headers": (431, b"GET /health HTTP/1.1\r\n" + CLOSE + b"".join(b"X-Flood-%d: v\r\n" % i for i in range(200))),
    "one 20 KB header": (431, b"GET /health HTTP/1.1\r\n" + CLOSE + b"X-Big: " + b"SECRETA" * 3_000 + b"\r\n"),
    "10,000-character path": (431, b"GET /api/v1/sessions/" + b"SECRETB" * 1_500 + b" HTTP/1.1\r\n" + CLOSE),
    "NUL in a header": (400, b"GET /health HTTP/1.1\r\n" + CLOSE + b"X-Evil: SECRETC\x00b\r\n"),
    "TLS handshake": (400, b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + b"\x00" * 64),
}


@pytest.mark.parametrize(("status", "raw"), list(FLOODS.values()), ids=list(FLOODS))
async def test_parser_errors_answer_with_the_envelope_and_echo_nothing(served: ServedFactory, status: int,
                                                                       raw: bytes,
                                                                       caplog: pytest.LogCaptureFixture) -> None:
    service = await served()
    got, headers, body = _split(await service.raw(raw + b"\r\n"))
    logged = [r for r in caplog.records if r.getMessage().startswith("Malformed request")]
    assert [getattr(r, "request_id", None) for r in logged] == [headers["x-request-id"]]  # the line names the id
    assert got == status
    assert headers["content-type"].startswith("application/json")
    envelope = json.loads(body)
    assert envelope["error"] == ("headers_too_large" if status == 431 else "bad_request")
    assert envelope["request_id"] == headers["x-request-id"] and envelope["timestamp"].endswith("Z")
    assert b"SECRET" not in body and b"Flood" not in body and b"Traceback" not in body
    got, _, _ = _split(await service.raw(HEALTH))
    assert got == 200
    assert service.app[CONNECTIONS].parser_errors == 1


async def test_a_well_formed_request_with_many_headers_is_served(served: ServedFactory) -> None:
    """The good twin: 100 headers and a 4 KB header are within the limits."""
    service = await served()
    raw = (b"GET /health HTTP/1.1\r\n" + CLOSE + b"".join(b"X-H-%d: v\r\n" % i for i in range(100))
           + b"X-Big: " + b"a" * 4096 + b"\r\n\r\n")
    status, headers, _ = _split(await service.raw(raw))
    assert status == 200 and headers["x-request-id"]


# --- idle, slow and kept-alive connections -------------------------------------------------------

async def test_silent_and_trickling_connections_are_closed_at_the_head_deadline(served: ServedFactory) -> None:
    service = await served(http_header_timeout_seconds=1.0, http_keepalive_seconds=30)

    async def trickle(writer: asyncio.StreamWriter) -> None:
        for byte in b"GET /health HTTP/1.1\r\nX-Slow: " + b"a" * 1000:
            writer.write(bytes([byte]))
            await asyncio.sleep(0.05)

    async def health_meanwhile() -> int:
        async with aiohttp.ClientSession() as session, session.get(f"{service.url}/health") as resp:
            return resp.status

    silent = [_closed_after(service, None, 10) for _ in range(20)]
    closed, health = await asyncio.gather(asyncio.gather(*silent, _closed_after(service, trickle, 10)),
                                          health_meanwhile())
    assert health == 200  # health answers while 21 connections hold on
    for elapsed, data in closed:
        assert data == b""  # closed without an answer
        assert elapsed >= 0.9  # not before the deadline
    assert service.app[CONNECTIONS].header_timeouts == 21


async def test_an_idle_keep_alive_connection_is_closed_after_the_keepalive_time(served: ServedFactory) -> None:
    service = await served(http_header_timeout_seconds=30, http_keepalive_seconds=1.0)
    reader, writer = await asyncio.open_connection(service.host, service.port)
    try:
        writer.write(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        length = int(_split(head)[1]["content-length"])
        await reader.readexactly(length)
        started = time.monotonic()
        assert await asyncio.wait_for(reader.read(), 10) == b""
        assert time.monotonic() - started >= 0.9
    finally:
        writer.close()


async def test_a_request_sent_in_time_is_served_on_a_connection_that_waited(served: ServedFactory) -> None:
    """The good twin: a connection that is quiet for a while, then sends a whole head, is served."""
    service = await served(http_header_timeout_seconds=2.0)
    reader, writer = await asyncio.open_connection(service.host, service.port)
    try:
        await asyncio.sleep(0.5)  # a client that connects early and sends later (a pre-opened connection)
        writer.write(HEALTH)
        status, _, _ = _split(await asyncio.wait_for(reader.read(), 5))
        assert status == 200
    finally:
        writer.close()


# --- the connection cap --------------------------------------------------------------------------

async def test_at_the_connection_cap_idle_connections_make_room_for_health(served: ServedFactory) -> None:
    service = await served(http_max_connections=10, http_header_timeout_seconds=30)
    idle = [await asyncio.open_connection(service.host, service.port) for _ in range(10)]
    try:
        for _ in range(3):  # the first takes the oldest silent one's place; then there is room again
            status, _, _ = _split(await service.raw(HEALTH))
            assert status == 200
        stats = service.app[CONNECTIONS]
        assert stats.shed == 1 and stats.open == 9
        closed = 0
        for reader, _ in idle:
            try:
                closed += await asyncio.wait_for(reader.read(), 0.5) == b""
            except TimeoutError:
                pass
        assert closed == 1
        assert await asyncio.wait_for(idle[0][0].read(), 0.5) == b""  # the oldest one went
    finally:
        for _, writer in idle:
            writer.close()


async def test_when_every_connection_is_busy_a_new_one_gets_503_in_the_envelope(served: ServedFactory) -> None:
    service = await served(http_max_connections=3, http_header_timeout_seconds=30)
    busy = []
    for _ in range(3):  # each has sent a whole head of a body that never comes: busy, not idle
        _, writer = await asyncio.open_connection(service.host, service.port)
        writer.write(b"POST /api/v1/chat HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 100\r\n\r\n{")
        await writer.drain()
        busy.append(writer)
    try:
        server = service.runner.server
        assert isinstance(server, GuardedServer)
        await eventually(lambda: len(server.connections_open) == 3
                         and all(p._request_count for p in server.connections_open), "three busy connections")
        status, headers, body = _split(await service.raw(HEALTH))
        assert status == 503 and headers["retry-after"] == "1"
        envelope = json.loads(body)
        assert envelope["error"] == "too_many_connections" and envelope["request_id"] == headers["x-request-id"]
    finally:
        for writer in busy:
            writer.close()


# --- log floods ----------------------------------------------------------------------------------

def test_repeated_identical_errors_are_logged_once_per_interval_with_a_count() -> None:
    now = [0.0]
    logger = logging.getLogger("tests.limits.flood")
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Keep()
    handler.addFilter(RepeatFilter(interval=10, clock=lambda: now[0]))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        for _ in range(10_000):
            logger.error("socket.accept() out of system resource: %s", "Too many open files")
        logger.error("a different error")
        logger.info("info lines are never held back")
        logger.info("info lines are never held back")
        now[0] = 11.0
        logger.error("socket.accept() out of system resource: %s", "Too many open files")
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
    messages = [r.getMessage() for r in records]
    per_request = RepeatFilter(interval=10, clock=lambda: now[0])
    lines = [logging.LogRecord("api.chat", logging.WARNING, __file__, 1, "Turn failed: shutting_down", None, None)
             for _ in range(2)]
    for request_id, line in zip(("r1", "r2"), lines, strict=True):
        line.request_id = request_id
    assert all(per_request.filter(line) for line in lines)  # one line per turn is never held back
    assert messages == [
        "socket.accept() out of system resource: Too many open files",
        "a different error",
        "info lines are never held back",
        "info lines are never held back",
        "socket.accept() out of system resource: Too many open files [repeated 9999 times in the last 10s]",
    ]
