"""``msev15 serve``'s server: the guarded runner and site, signals, draining and the goodbye lines.

The first SIGINT/SIGTERM starts a graceful shutdown: the service keeps listening while it drains
(new chats get 503, readiness says not_ready), the runner cuts what is left at the one deadline,
and the goodbye lines say what was closed. A second signal exits at once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable

from aiohttp import web

from msev15.agent.context import MCP, RUNNER, begin_shutdown
from msev15.config import Settings
from msev15.handlers.health_monitor import HEALTH, STATE
from msev15.logs.writer import flush_logging
from msev15.server.connections import CONNECTIONS, ConnectionLimits, GuardedRunner
from msev15.store.base import SESSIONS

log = logging.getLogger("app.serve")
# How long start-up waits for the model endpoint's first probe, so the banner can warn about it.
MODEL_PROBE_AT_START_SECONDS = 3.0


def _say(*lines: str) -> None:
    print(*lines, sep="\n", flush=True)


class _Signals:
    """First SIGINT/SIGTERM starts a graceful shutdown; a second one exits at once."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.stop = asyncio.Event()
        self.received: int | None = None
        self._loop = loop
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._on_signal, sig)

    def _on_signal(self, sig: int) -> None:
        if self.received is None:
            self.received = sig
            self.stop.set()
            return
        print(f"\nSecond signal ({signal.Signals(sig).name}) during shutdown: exiting now without draining.",
              file=sys.stderr, flush=True)
        flush_logging()
        os._exit(128 + sig)

    def remove(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._loop.remove_signal_handler(sig)


async def _wait_for_mcp(app: web.Application, settings: Settings) -> str | None:
    """Start-up never waits for MCP unless it is required; returns an error sentence or None."""
    connections = app[MCP]
    if settings.mcp_server_required:
        complaints = connections.get("complaints")
        if complaints is None or not await complaints.wait_connected(settings.mcp_connect_timeout_seconds):
            return (f"MCP server {settings.mcp_server_url} is required (MCP_SERVER_REQUIRED=true) but did not "
                    f"connect within {settings.mcp_connect_timeout_seconds:g}s")
        return None
    # Give reachable servers (and the model endpoint's first probe) a moment so the banner shows
    # their real state and tool count.
    await asyncio.gather(app[HEALTH].first_status(MODEL_PROBE_AT_START_SECONDS),
                         *(c.wait_connected(1.0) for c in connections.values()))
    return None


async def _until(stop: asyncio.Event, coro: Awaitable[str | None]) -> str | None:
    """Run ``coro`` unless a shutdown signal comes first (then None, and ``stop`` is set)."""
    work = asyncio.ensure_future(coro)
    stopped = asyncio.ensure_future(stop.wait())
    await asyncio.wait({work, stopped}, return_when=asyncio.FIRST_COMPLETED)
    for task in (work, stopped):
        task.cancel()
    results = await asyncio.gather(work, stopped, return_exceptions=True)
    return None if stop.is_set() or isinstance(results[0], BaseException) else results[0]


def _say_signal(signals: _Signals) -> None:
    name = signal.Signals(signals.received or signal.SIGTERM).name
    if name != "SIGINT":
        _say(f"Shutdown signal received ({name})...")
    elif sys.stdout.isatty():
        _say(" Shutdown signal received...")  # the terminal has echoed "^C" on this line already
    else:
        _say("^C Shutdown signal received...")
    log.info("Shutdown signal %s received; draining", name)


async def _count_sessions(app: web.Application) -> int:
    try:
        return await asyncio.wait_for(app[SESSIONS].count(), 2.0)
    except Exception:  # the store is gone (Redis down): the goodbye line says 0
        return 0


async def serve(app: web.Application, settings: Settings, *, on_serving: Callable[[], None],
                after_cleanup: Callable[[], Awaitable[None]] | None = None) -> int:
    """Serve ``app`` until SIGINT/SIGTERM, then drain and print the goodbye lines; the exit code.
    ``on_serving`` runs once the service listens (the banner); ``after_cleanup`` after the app has
    closed (the reference servers stop after the service closed its MCP sessions to them)."""
    loop = asyncio.get_running_loop()
    signals = _Signals(loop)
    limits = ConnectionLimits(settings.http_header_timeout_seconds, settings.http_max_connections)
    runner = GuardedRunner(app, limits, app[CONNECTIONS], handle_signals=False, access_log=None,
                           shutdown_timeout=settings.shutdown_timeout_seconds,
                           keepalive_timeout=settings.keepalive_seconds)
    try:
        await runner.setup()
    except Exception as exc:
        log.exception("start-up failed")
        print(f"Error: the service could not start: {exc}", file=sys.stderr, flush=True)
        await runner.cleanup()  # close what did start (its threads would keep the process alive)
        return 1
    try:
        # Bind first: a taken port is reported at once, and while a required MCP server is awaited
        # the readiness probe already answers (not_ready).
        site = web.TCPSite(runner, settings.server_host, settings.server_port, reuse_address=True)
        try:
            await site.start()
        except OSError as exc:
            reason = os.strerror(exc.errno) if exc.errno else str(exc)
            print(f"Error: cannot listen on {settings.server_host}:{settings.server_port}: {reason}",
                  file=sys.stderr, flush=True)
            return 1
        problem = await _until(signals.stop, _wait_for_mcp(app, settings))
        if problem:
            print(f"Error: {problem}", file=sys.stderr, flush=True)
            return 1
        if not signals.stop.is_set():
            on_serving()
            log.info("Serving on %s:%s", settings.server_host, settings.server_port)
            await signals.stop.wait()
        _say_signal(signals)
        # Drain while still listening: new chat requests get 503 and readiness says not_ready, so
        # load balancers see the service leave instead of connections being refused.
        begin_shutdown(app)
        await app[RUNNER].wait_idle()  # the runner cuts what is left at the one deadline
        app[STATE].sessions_at_shutdown = await _count_sessions(app)
    finally:
        await runner.cleanup()
        if after_cleanup is not None:
            await after_cleanup()
    state, cut = app[STATE], app[RUNNER].cut_turns if RUNNER in app else 0
    note = f" ({cut} turns cut at the deadline)" if cut else ""
    _say(f"  • Closing active sessions... [{state.sessions_at_shutdown} sessions]{note}", "  • Flushing logs...")
    flush_logging()
    _say("  • Closing database connections...", "  • Cleanup complete.", "Server stopped gracefully. Goodbye!")
    signals.remove()
    return 0
