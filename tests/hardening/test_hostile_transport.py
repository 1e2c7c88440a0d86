"""Hostile clients at the HTTP level: header floods, huge lines, lying lengths, slow loris.

Header floods and over-long request lines are refused by aiohttp's parser before any middleware
runs. Under aiohttp's test server (these tests) the answer is aiohttp's own short ``400`` in
text/plain and the connection is closed; ``msev15 serve`` answers them with the envelope and
X-Request-ID instead (tests/limits/test_connections.py). What we require there: a clean 4xx, no echo of
internals, and a service that keeps serving. Everything that reaches a handler gets the envelope.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from msev15.events.context import BUS
from msev15.store.base import SESSIONS
from tests.conftest import assert_envelope

READ_TIMEOUT = 5.0
BODY_TIMEOUT_SECONDS = 3.0  # REQUEST_BODY_TIMEOUT_SECONDS for these tests (default 10)
_CLOSE = b"Host: localhost\r\nConnection: close\r\n"


@dataclass(frozen=True, slots=True)
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes


@pytest.fixture
async def client(service: Any) -> AsyncIterator[TestClient]:
    yield await service(request_body_timeout_seconds=BODY_TIMEOUT_SECONDS)


async def _read_response(reader: asyncio.StreamReader) -> RawResponse:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT + BODY_TIMEOUT_SECONDS)
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    body = await asyncio.wait_for(reader.readexactly(length), READ_TIMEOUT)
    return RawResponse(int(status_line.split()[1]), headers, body)


async def _send_raw(client: TestClient, data: bytes) -> RawResponse:
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    try:
        writer.write(data)
        await writer.drain()
        return await _read_response(reader)
    finally:
        writer.close()
        await writer.wait_closed()


async def _still_serving(client: TestClient) -> None:
    app = client.app
    assert app is not None
    assert app[BUS].published == 0 and await app[SESSIONS].count() == 0, "a refused request wrote something"
    resp = await client.post("/api/v1/chat", json={"session_id": "after", "message": "hello"})
    assert resp.status == 200, await resp.text()


FLOODS = {
    "200 headers": b"GET /health HTTP/1.1\r\n" + _CLOSE + b"".join(b"X-Flood-%d: v\r\n" % i for i in range(200)),
    "one 20 KB header": b"GET /health HTTP/1.1\r\n" + _CLOSE + b"X-Big: " + b"a" * 20_000 + b"\r\n",
    "10,000-character X-Request-ID": b"GET /health HTTP/1.1\r\n" + _CLOSE + b"X-Request-ID: " + b"r" * 10_000 + b"\r\n",
    "10,000-character id in the path": b"GET /api/v1/sessions/" + b"a" * 10_000 + b"/history HTTP/1.1\r\n" + _CLOSE,
    "10,000-character tenant_id in the query": b"GET /api/v1/sessions?tenant_id=" + b"t" * 10_000
                                               + b" HTTP/1.1\r\n" + _CLOSE,
    "NUL in a header": b"GET /health HTTP/1.1\r\n" + _CLOSE + b"X-Evil: a\x00b\r\n",
    "Content-Length with chunked": b"POST /api/v1/chat HTTP/1.1\r\n" + _CLOSE
                                   + b"Content-Type: application/json\r\nContent-Length: 5\r\n"
                                   + b"Transfer-Encoding: chunked\r\n",
    "negative Content-Length": b"POST /api/v1/chat HTTP/1.1\r\n" + _CLOSE
                               + b"Content-Type: application/json\r\nContent-Length: -1\r\n",
    "TLS handshake on the HTTP port": b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + b"\x00" * 64,
}


@pytest.mark.parametrize("raw", list(FLOODS.values()), ids=list(FLOODS))
async def test_header_flood_gets_a_clean_400_and_the_service_keeps_serving(client: TestClient, raw: bytes) -> None:
    resp = await _send_raw(client, raw + b"\r\n")
    assert resp.status == 400
    assert resp.headers["content-type"].startswith("text/plain")
    assert len(resp.body) < 300 and b"Traceback" not in resp.body and b"File " not in resp.body
    await _still_serving(client)


async def test_many_headers_within_the_limits_are_served(client: TestClient) -> None:
    """The good twin of the floods: 100 headers and a 4 KB header are fine."""
    resp = await _send_raw(client, b"GET /health HTTP/1.1\r\n" + _CLOSE + b"X-Big: " + b"a" * 4096 + b"\r\n"
                           + b"".join(b"X-Many-%d: v\r\n" % i for i in range(100)) + b"\r\n")
    assert resp.status == 200 and json.loads(resp.body)["status"] == "healthy"


async def test_lying_content_length_is_refused_without_waiting(service: Any) -> None:
    """A client announcing 100 GB is told 413 at once, not after the body deadline: with a body
    deadline far beyond the read timeout, an answer at all proves the server did not wait for it."""
    patient = await service(request_body_timeout_seconds=600)
    resp = await _send_raw(patient, b"POST /api/v1/chat HTTP/1.1\r\n" + _CLOSE
                           + b"Content-Type: application/json\r\nContent-Length: 100000000000\r\n\r\n{")
    assert resp.status == 413
    assert_envelope(json.loads(resp.body), "payload_too_large")
    await _still_serving(patient)


async def _slow_loris(client: TestClient, path: str) -> tuple[RawResponse, float, int]:
    """Send the headers, then the body one byte a second until the server answers."""
    body = json.dumps({"session_id": "loris", "message": "I am very slow"}).encode()
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    sent = 0

    async def trickle() -> None:
        nonlocal sent
        for byte in body:
            writer.write(bytes([byte]))
            await writer.drain()
            sent += 1
            await asyncio.sleep(1.0)

    try:
        writer.write(f"POST {path} HTTP/1.1\r\n".encode() + _CLOSE
                     + f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode())
        await writer.drain()
        started = time.monotonic()
        dribble = asyncio.create_task(trickle(), name="slow-loris")
        try:
            resp = await _read_response(reader)
        finally:
            dribble.cancel()
            await asyncio.gather(dribble, return_exceptions=True)
        return resp, time.monotonic() - started, sent
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except ConnectionError:
            pass  # the server may already have reset a connection it gave up on


async def test_a_slow_but_steady_body_is_served(client: TestClient) -> None:
    """The good twin of the slow loris: a body in pieces, well within the deadline, is answered."""
    body = json.dumps({"session_id": "patient", "message": "hello there"}).encode()
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    try:
        writer.write(b"POST /api/v1/chat HTTP/1.1\r\n" + _CLOSE
                     + f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode())
        for start in range(0, len(body), 20):
            writer.write(body[start:start + 20])
            await writer.drain()
            await asyncio.sleep(0.2)
        resp = await _read_response(reader)
    finally:
        writer.close()
        await writer.wait_closed()
    assert resp.status == 200, resp.body
    assert json.loads(resp.body)["message_count"] == 2


async def test_a_408_closes_the_connection(client: TestClient) -> None:
    """A keep-alive client whose body stalls: after the 408 the rest of its body must not be read
    as a next request, so the response says ``Connection: close`` (RFC 9110, 15.5.9) and the
    server closes it (after aiohttp's lingering read, bounded at 10 s)."""
    body = json.dumps({"session_id": "stall", "message": "never finished"}).encode()
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    try:
        writer.write(b"POST /api/v1/chat HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                     + f"Content-Length: {len(body)}\r\n\r\n".encode() + body[:5])
        await writer.drain()
        resp = await _read_response(reader)
        assert resp.status == 408 and resp.headers["connection"].lower() == "close"
        assert_envelope(json.loads(resp.body), "request_timeout")
    finally:
        writer.close()


async def test_slow_loris_bodies_time_out_with_408(client: TestClient) -> None:
    """Several clients send their body at 1 byte/s: each gets 408 at the deadline; others are served."""
    loris = [asyncio.create_task(_slow_loris(client, path), name=f"loris:{path}")
             for path in ("/api/v1/chat", "/api/v1/chat/stream", "/api/v1/chat")]
    try:
        # Meanwhile the service answers everyone else at once.
        for _ in range(3):
            resp = await client.get("/health")
            assert resp.status == 200
            assert not any(task.done() for task in loris)  # answered while every loris still hangs on
        results = await asyncio.gather(*loris)
    finally:
        for task in loris:
            task.cancel()
        await asyncio.gather(*loris, return_exceptions=True)
    for raw, elapsed, sent in results:
        assert raw.status == 408
        assert_envelope(json.loads(raw.body), "request_timeout")
        assert elapsed >= BODY_TIMEOUT_SECONDS - 1, elapsed  # not given up before the deadline
        assert sent < 20  # the body was far from complete when the server gave up
    await _still_serving(client)
