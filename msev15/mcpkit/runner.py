"""Running an MCP server's ASGI app on a socket with uvicorn, for the CLI and for tests.

Two things differ from ``uvicorn.run``: logging is left to the process (``log_config=None``),
and signals are handled without uvicorn's re-raise after shutdown, so SIGINT/SIGTERM end the
process with exit code 0 after a graceful stop.

A supervised server (``msev15 serve --with-reference-servers`` starts them with
``STOP_WITH_PARENT_ENV=1`` and a pipe on stdin) also stops gracefully when its stdin reaches end
of file: the kernel closes the pipe when the parent exits, however it exits (SIGKILL, out of
memory), so no orphan keeps serving or holding its port.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import uvicorn
from starlette.types import ASGIApp

from msev15.common.telemetry import TelemetryConfig, tracer_provider
from msev15.mcpkit.auth import require_bearer

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

log = logging.getLogger("mcp.runner")

STOP_WITH_PARENT_ENV = "MSEV15_STOP_ON_STDIN_EOF"


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0 picks a free one).

    ``SO_REUSEADDR`` lets a server that was stopped bind the same port again at once.
    Raises ``OSError`` with the address in the message when the port is taken.
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise OSError(f"cannot resolve host {host!r}: {exc}") from None
    family, kind, proto, _, address = infos[0]
    # The real protocol number matters: asyncio only sets TCP_NODELAY on accepted sockets whose
    # proto is IPPROTO_TCP, and without it every keep-alive response waits ~40 ms for an ACK.
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.setblocking(False)
    return sock


class McpHttpServer(uvicorn.Server):
    """``uvicorn.Server`` for an MCP app.

    With ``auth_token``, every HTTP request must carry ``Authorization: Bearer <auth_token>``
    (:func:`msev15.mcpkit.auth.require_bearer`).

    ``before_shutdown`` runs when shutdown starts (e.g. to end long-lived listen streams, which
    would otherwise hold the graceful shutdown open until ``graceful_timeout``).

    Two things are added to uvicorn's shutdown, so that no socket outlives :meth:`serve`:

    - The listening sockets stop accepting one loop tick before they are closed. On Python 3.11,
      closing an ``asyncio.Server`` while a connection it has just accepted waits for its turn to
      be set up fails that set-up (``Server._attach`` asserts) and drops the accepted socket
      unclosed, so the client hangs until the garbage collector closes it. A connection accepted
      before the reader was removed is already queued ahead of the tick and is set up normally.
    - Connections still open after ``graceful_timeout`` are aborted. uvicorn cancels their
      tasks but leaves the sockets open.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        handle_signals: bool = False,
        before_shutdown: Callable[[], None] | None = None,
        graceful_timeout: float = 5.0,
        log_level: str = "info",
        auth_token: str = "",
        telemetry: TelemetryConfig | None = None,
    ) -> None:
        self.tracer_provider: TracerProvider | None = None
        if telemetry is not None:  # the OTEL_* variables name an endpoint: server spans in the caller's trace
            from msev15.mcpkit.tracing import traced

            self.tracer_provider = tracer_provider(telemetry)
            app = traced(app, self.tracer_provider.get_tracer("msev15.mcpkit"))
        config = uvicorn.Config(
            require_bearer(app, auth_token),  # every HTTP request checked before any MCP processing
            log_config=None,
            log_level=log_level.lower(),
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=max(1, round(graceful_timeout)),
        )
        super().__init__(config)
        self._handle_signals = handle_signals
        self._before_shutdown = before_shutdown
        self._crashed = False
        self._stop_with_parent = handle_signals and os.environ.get(STOP_WITH_PARENT_ENV) == "1"

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self._stop_with_parent:
            self._watch_stdin()

    def _watch_stdin(self) -> None:
        loop = asyncio.get_running_loop()
        fd = 0

        def readable() -> None:
            try:
                data = os.read(fd, 4096)
            except OSError:
                data = b""
            if not data:
                loop.remove_reader(fd)
                log.warning("The supervising process is gone; stopping")
                self.should_exit = True

        loop.add_reader(fd, readable)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if not self._handle_signals or threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self._stop_accepting()
        # One tick: connections accepted before the reader went are set up before uvicorn closes
        # the listening sockets (a step in the loop's order, not a wait for time to pass).
        await asyncio.sleep(0)
        if self._crashed:
            self._abort_connections()  # those set up since crash()
        if self._before_shutdown is not None:
            self._before_shutdown()
        await super().shutdown(sockets=sockets)
        self._abort_connections()  # what outlived the graceful timeout
        if self.tracer_provider is not None:
            self.tracer_provider.shutdown()  # the last spans out, then the exporter thread stops

    def crash(self) -> None:
        """Stop accepting and drop every open connection at once, as a killed process would.

        For tests; follow it with ``should_exit = True`` to let the task finish. A connection
        accepted in the same loop tick is dropped when the shutdown starts.
        """
        self._crashed = True
        self._stop_accepting()
        loop = asyncio.get_running_loop()
        for server in getattr(self, "servers", ()):
            loop.call_soon(server.close)  # after the set-up of what was accepted this tick
        self._abort_connections()

    def _stop_accepting(self) -> None:
        loop = asyncio.get_running_loop()
        for server in getattr(self, "servers", ()):
            for sock in server.sockets:
                loop.remove_reader(sock.fileno())

    def _abort_connections(self) -> None:
        for connection in list(self.server_state.connections):
            transport = getattr(connection, "transport", None)
            if isinstance(transport, asyncio.Transport) and not transport.is_closing():
                transport.abort()
