"""Run MCP servers on loopback ports inside the test's event loop, and stop/restart them.

Reusable from any test package::

    from tests.complaints.server import running_complaints_server

    async with running_complaints_server(tmp_path / "complaints.db") as server:
        ...  # server.url is http://127.0.0.1:<port>/mcp
        await server.stop(abrupt=True)  # the server "crashes": every connection is dropped
        await server.start()  # back on the same port

The server runs under uvicorn in a task of the current loop (no subprocess start-up cost); each
start builds a fresh ASGI app because the SDK's session manager runs only once.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from mcp.server.mcpserver import MCPServer

from msev15.common.telemetry import TelemetryConfig
from msev15.complaints.server import (
    MCP_PATH,
    build_app,
    build_server,
    close_listen_streams,
)
from msev15.complaints.store import ComplaintStore
from msev15.mcpkit.runner import McpHttpServer, bind_socket

HOST = "127.0.0.1"
START_TIMEOUT = 10.0


async def eventually(predicate: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    """Poll ``predicate`` until it holds; fail after ``timeout`` seconds (no blind sleeps)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.01)


class McpTestServer:
    """An ``MCPServer`` served over Streamable HTTP on a fixed loopback port.

    The port is chosen on the first :meth:`start` (or by :meth:`reserve_port`) and kept, so a
    client configured with :attr:`url` finds the server again after :meth:`stop`/:meth:`start`.
    """

    def __init__(self, server: MCPServer, *, port: int = 0, auth_token: str = "",
                 telemetry: TelemetryConfig | None = None) -> None:
        self.mcp = server
        self.telemetry = telemetry
        self.port = port
        self.auth_token = auth_token
        self.store: ComplaintStore | None = None  # set by running_complaints_server
        self._http: McpHttpServer | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        if not self.port:
            raise RuntimeError("no port yet: call start() or reserve_port() first")
        return f"http://{HOST}:{self.port}{MCP_PATH}"

    @property
    def base_url(self) -> str:
        return self.url.removesuffix(MCP_PATH)

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def reserve_port(self) -> int:
        """Pick the port without serving (for "server down at start" tests)."""
        if not self.port:
            sock = bind_socket(HOST, 0)
            self.port = sock.getsockname()[1]
            sock.close()
        return self.port

    async def start(self) -> None:
        if self.running:
            raise RuntimeError("server already running")
        sock = bind_socket(HOST, self.port)
        self.port = sock.getsockname()[1]
        mcp = self.mcp
        http = McpHttpServer(
            build_app(mcp, host=HOST),
            before_shutdown=lambda: close_listen_streams(mcp),
            graceful_timeout=1.0,
            log_level="warning",
            auth_token=self.auth_token,
            telemetry=self.telemetry,
        )
        task = asyncio.get_running_loop().create_task(http.serve(sockets=[sock]), name=f"mcp-test-server:{self.port}")
        self._http, self._task = http, task
        loop = asyncio.get_running_loop()
        deadline = loop.time() + START_TIMEOUT
        while not http.started:
            if task.done():
                sock.close()
                await task  # raises what stopped it
                raise RuntimeError("MCP test server exited during start-up")
            if loop.time() > deadline:
                await self.stop()
                raise TimeoutError(f"MCP test server did not start within {START_TIMEOUT}s")
            await asyncio.sleep(0.005)

    async def stop(self, *, abrupt: bool = False) -> None:
        """Stop serving. ``abrupt`` drops every connection first, like a killed process."""
        http, task = self._http, self._task
        self._http = self._task = None
        if http is None or task is None:
            return
        if abrupt:
            http.crash()
        http.should_exit = True
        await asyncio.wait_for(task, START_TIMEOUT)


@asynccontextmanager
async def running_mcp_server(server: MCPServer, *, start: bool = True, auth_token: str = "",
                             telemetry: TelemetryConfig | None = None) -> AsyncIterator[McpTestServer]:
    """Serve ``server`` on a free loopback port for the duration of the block (with ``auth_token``,
    every HTTP request must carry it as a bearer token)."""
    handle = McpTestServer(server, auth_token=auth_token, telemetry=telemetry)
    try:
        if start:
            await handle.start()
        else:
            handle.reserve_port()
        yield handle
    finally:
        await handle.stop()


@asynccontextmanager
async def running_complaints_server(
    db_path: str | Path, *, start: bool = True, setup: Callable[[ComplaintStore], None] | None = None,
    auth_token: str = "", telemetry: TelemetryConfig | None = None,
) -> AsyncIterator[McpTestServer]:
    """The reference complaints server over a SQLite file; ``setup`` may seed the store first.

    The handle's ``store`` attribute is the server's store (for direct checks).
    """
    store = ComplaintStore(db_path)
    try:
        if setup is not None:
            setup(store)
        async with running_mcp_server(build_server(store), start=start, auth_token=auth_token,
                                      telemetry=telemetry) as handle:
            handle.store = store
            yield handle
    finally:
        store.close()
