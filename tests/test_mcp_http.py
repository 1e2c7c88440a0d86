"""McpHttpServer: no socket outlives ``serve()``, however the server stops.

The server runs in the test's loop on a real loopback socket; clients are plain sockets, so the
tests control exactly when a connection reaches the server relative to the loop's ticks.
"""

from __future__ import annotations

import asyncio
import gc
import socket
import warnings
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from msev15.mcpkit.runner import McpHttpServer, bind_socket

HOST = "127.0.0.1"
STEP_TIMEOUT = 10.0


async def _hello(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """A minimal ASGI app: lifespan, and 200 "hello" for any request."""
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"5")]})
    await send({"type": "http.response.body", "body": b"hello"})


@asynccontextmanager
async def _serving(app: Any = _hello, *, graceful_timeout: float = 1.0) -> AsyncIterator[tuple[McpHttpServer, int]]:
    """Serve ``app``; on exit, ask the server to stop (if nobody did) and wait for ``serve()``."""
    sock = bind_socket(HOST, 0)
    port = sock.getsockname()[1]
    http = McpHttpServer(app, graceful_timeout=graceful_timeout, log_level="warning")
    task = asyncio.get_running_loop().create_task(http.serve(sockets=[sock]))
    try:
        async with asyncio.timeout(STEP_TIMEOUT):
            while not http.started:
                assert not task.done(), "the server stopped during start-up"
                await asyncio.sleep(0.005)
        yield http, port
    finally:
        http.should_exit = True
        await asyncio.wait_for(task, STEP_TIMEOUT)
        sock.close()


def _connect(port: int) -> socket.socket:
    """A connected client socket; on loopback the kernel completes the handshake at once."""
    client = socket.create_connection((HOST, port), timeout=STEP_TIMEOUT)
    client.settimeout(STEP_TIMEOUT)
    return client


async def _read_until(client: socket.socket, marker: bytes) -> bytes:
    """Read (in a thread: the socket blocks) until ``marker`` arrives; a response may come in parts."""
    def read() -> bytes:
        data = b""
        while marker not in data:
            chunk = client.recv(4096)
            if not chunk:
                break
            data += chunk
        return data

    return await asyncio.to_thread(read)


async def _closed_by_server(client: socket.socket) -> bool:
    """True once the server has closed or reset its end (read in a thread: the socket blocks)."""
    def read() -> bool:
        try:
            while client.recv(4096):
                pass
        except ConnectionResetError:
            pass
        return True

    return await asyncio.to_thread(read)


def _record_loop_errors() -> list[dict[str, Any]]:
    errors: list[dict[str, Any]] = []
    asyncio.get_running_loop().set_exception_handler(lambda _loop, context: errors.append(context))
    return errors


async def test_a_crash_in_the_tick_a_connection_is_accepted_drops_it_cleanly() -> None:
    """The Python 3.11 race: the listener is closed between accept() and the connection's set-up.

    Order of the loop's ticks: the client connects; on the next tick this test's step runs
    ahead of the listener's accept callback and queues ``crash`` for the tick after, where it
    runs ahead of the set-up of the connection that the accept callback has just taken.
    """
    errors = _record_loop_errors()
    loop = asyncio.get_running_loop()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        async with _serving() as (http, port):
            client = _connect(port)
            await asyncio.sleep(0)  # the next tick polls the listener as readable
            loop.call_soon(http.crash)
            await asyncio.sleep(0)
            http.should_exit = True
        with client:
            assert await _closed_by_server(client)
        gc.collect()
    assert not errors, errors  # e.g. "Error on transport creation for incoming connection"
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)], [str(w.message) for w in caught]
    assert not http.server_state.connections


async def test_a_crash_drops_open_connections_and_stops_accepting() -> None:
    async with _serving() as (http, port):
        with _connect(port) as client:
            client.sendall(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n")
            reply = await _read_until(client, b"hello")
            assert reply.startswith(b"HTTP/1.1 200") and reply.endswith(b"\r\n\r\nhello"), reply
            http.crash()
            assert await _closed_by_server(client)  # the keep-alive connection is gone at once
        http.should_exit = True
    refused = socket.socket()
    with refused:
        refused.settimeout(STEP_TIMEOUT)
        assert refused.connect_ex((HOST, port)) != 0  # nobody listens any more


async def test_a_connection_that_outlives_the_graceful_timeout_is_aborted() -> None:
    """uvicorn cancels the task of a request still running at the timeout, but not its socket."""
    release = asyncio.Event()

    async def stubborn(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await _hello(scope, receive, send)
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        try:
            await release.wait()
        except asyncio.CancelledError:
            await release.wait()  # ignores the cancellation, as a badly behaved handler can

    errors = _record_loop_errors()
    async with _serving(stubborn, graceful_timeout=1.0) as (http, port):
        with _connect(port) as client:
            client.sendall(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n")
            head = await _read_until(client, b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200"), head
            http.should_exit = True
            assert await _closed_by_server(client)
    assert not http.server_state.connections
    stubborn_tasks = set(http.server_state.tasks)
    assert stubborn_tasks  # cancelled by uvicorn, still running
    release.set()
    await asyncio.wait_for(asyncio.gather(*stubborn_tasks, return_exceptions=True), STEP_TIMEOUT)
    assert not errors, errors
