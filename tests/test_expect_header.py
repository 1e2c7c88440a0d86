"""The ``Expect`` header: ``100-continue`` is honoured, anything else ignored on every route
(msev15/handlers/expect.py), so no request is answered outside the front door's envelope."""

from __future__ import annotations

import asyncio
import json

from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from msev15.app import create_app
from tests.conftest import assert_envelope, make_settings

BOGUS = "u%KnaMzKjCU"


async def test_an_unknown_expectation_is_ignored_and_the_request_answered(service) -> None:
    client = await service()
    resp = await client.post("/api/v1/chat", json={"session_id": "s1", "message": "hello"},
                             headers={"Expect": BOGUS, "X-Request-ID": "exp-1"})
    assert resp.status == 200 and resp.headers["X-Request-ID"] == "exp-1"
    assert (await resp.json())["message"]
    # A bad request with the same header is refused as itself, in the envelope.
    resp = await client.put("/api/v1/agent-profile", json={"instructions": 1},
                            headers={"Expect": BOGUS, "If-Match": "Ze!d$9-"})
    assert resp.status == 400
    body = await resp.json()
    assert_envelope(body, body["error"])
    assert body["request_id"] == resp.headers["X-Request-ID"]


async def test_every_route_ignores_an_unknown_expectation(tmp_path) -> None:
    """Each route's own expect handler, CORS preflights and static files included: a route added
    later without it would answer aiohttp's bare 417 (HTTPExpectationFailed)."""
    app = await create_app(make_settings(tmp_path, enable_cors=True, cors_origins=["https://a.example"]))
    routes = list(app.router.routes())
    assert any(route.method == "OPTIONS" for route in routes)  # the preflights are among them
    for route in routes:
        request = make_mocked_request(route.method if route.method != "*" else "GET", "/",
                                      headers={"Expect": BOGUS}, app=app)
        try:
            assert await route.handle_expect_header(request) is None
        except web.HTTPExpectationFailed:
            raise AssertionError(f"{route.method} {route.resource} answers an unknown Expect with 417") from None


async def test_100_continue_gets_its_interim_response_before_the_body(service) -> None:
    client = await service()
    body = json.dumps({"session_id": "s2", "message": "hello"}).encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
    try:
        writer.write(b"POST /api/v1/chat HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Expect: 100-Continue\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body))
        await writer.drain()
        # The server asks for the body before it has any of it.
        interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        writer.write(body)
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 30)
    finally:
        writer.close()
    head, _, payload = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"X-Request-ID" in head
    assert json.loads(payload)["session_id"] == "s2"
