"""``msev15 serve | complaints-mcp | escalation-mcp | config``."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Sequence

from aiohttp import web

from msev15 import __version__, keys
from msev15.app import begin_shutdown, create_app
from msev15.banner import banner, security_warnings
from msev15.common.env import SettingsError
from msev15.common.logsetup import close_logging, flush_logging
from msev15.config import Settings, load_settings
from msev15.connections import ConnectionLimits, GuardedRunner
from msev15.health import readiness_warnings
from msev15.keycli import add_parser as add_keys_parser
from msev15.keycli import keys_command
from msev15.logs import setup_logging
from msev15.supervisor import Supervisor

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
    connections = app[keys.MCP]
    if settings.mcp_server_required:
        complaints = connections.get("complaints")
        if complaints is None or not await complaints.wait_connected(settings.mcp_connect_timeout_seconds):
            return (f"MCP server {settings.mcp_server_url} is required (MCP_SERVER_REQUIRED=true) but did not "
                    f"connect within {settings.mcp_connect_timeout_seconds:g}s")
        return None
    # Give reachable servers (and the model endpoint's first probe) a moment so the banner shows
    # their real state and tool count.
    await asyncio.gather(app[keys.HEALTH].first_status(MODEL_PROBE_AT_START_SECONDS),
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


def _print_banner(app: web.Application, settings: Settings, supervisor: Supervisor | None = None) -> None:
    # Log lines are written by a thread: let the start-up ones out first, so none lands inside the banner.
    flush_logging()
    registry, connections = app[keys.REGISTRY], app[keys.MCP]
    monitor = app[keys.HEALTH]
    warnings = security_warnings(settings) + readiness_warnings(
        settings, model_status=monitor.last_model_status, mailer=app[keys.MAILER], mcp=connections,
        at_start=True, model_endpoint=monitor.endpoint)
    labels = {"complaints": "MCP Server", "escalation": "Escalation MCP"}  # the banner's status lines
    _say(banner(settings, local_tools=len(registry.local_names), mcp_tools=len(registry) - len(registry.local_names),
                mcp_status={labels.get(n, n): (c.url, c.status == "connected") for n, c in connections.items()},
                warnings=warnings, model_endpoint=monitor.endpoint))
    if settings.playground_enabled:
        host = "localhost" if settings.server_host in ("0.0.0.0", "::", "") else settings.server_host
        _say(f"Playground: http://{host}:{settings.server_port}/")
    if supervisor is not None:
        _say(*supervisor.banner_lines())


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
        return await asyncio.wait_for(app[keys.SESSIONS].count(), 2.0)
    except Exception:  # the store is gone (Redis down): the goodbye line says 0
        return 0


async def _serve(settings: Settings, with_reference_servers: bool = False) -> int:
    """Serve; with ``with_reference_servers`` also run the reference MCP servers as children."""
    if not with_reference_servers:
        return await _serve_app(settings)
    supervisor = Supervisor(token=settings.mcp_auth_token)
    try:
        await supervisor.start()
        return await _serve_app(supervisor.settings(settings), supervisor)
    finally:
        await supervisor.stop()


async def _serve_app(settings: Settings, supervisor: Supervisor | None = None) -> int:
    loop = asyncio.get_running_loop()
    signals = _Signals(loop)
    app = await create_app(settings)
    limits = ConnectionLimits(settings.http_header_timeout_seconds, settings.http_max_connections)
    runner = GuardedRunner(app, limits, app[keys.CONNECTIONS], handle_signals=False, access_log=None,
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
            _print_banner(app, settings, supervisor)
            log.info("Serving on %s:%s", settings.server_host, settings.server_port)
            await signals.stop.wait()
        _say_signal(signals)
        # Drain while still listening: new chat requests get 503 and readiness says not_ready, so
        # load balancers see the service leave instead of connections being refused.
        begin_shutdown(app)
        await app[keys.RUNNER].wait_idle()  # the runner cuts what is left at the one deadline
        app[keys.STATE].sessions_at_shutdown = await _count_sessions(app)
    finally:
        await runner.cleanup()
        if supervisor is not None:
            await supervisor.stop()  # after the service closed its MCP sessions to them
    state, cut = app[keys.STATE], app[keys.RUNNER].cut_turns if keys.RUNNER in app else 0
    note = f" ({cut} turns cut at the deadline)" if cut else ""
    _say(f"  • Closing active sessions... [{state.sessions_at_shutdown} sessions]{note}", "  • Flushing logs...")
    flush_logging()
    _say("  • Closing database connections...", "  • Cleanup complete.", "Server stopped gracefully. Goodbye!")
    signals.remove()
    return 0


def _report(exc: SettingsError) -> None:
    print("Configuration error:", file=sys.stderr)
    for problem in exc.problems:
        print(f"  {problem}", file=sys.stderr)


def _serve_command(args: argparse.Namespace) -> int:
    try:
        settings = load_settings(args.env_file)
    except SettingsError as exc:
        _report(exc)
        return 2
    if args.host:
        settings = settings.replace(server_host=args.host)
    if args.port is not None:
        settings = settings.replace(server_port=args.port)
    setup_logging(settings)
    try:
        return asyncio.run(_serve(settings, args.with_reference_servers))
    finally:
        close_logging()


def _config_command(args: argparse.Namespace) -> int:
    try:
        settings = load_settings(args.env_file)
    except SettingsError as exc:
        _report(exc)
        return 2
    lines = []
    for name, value in settings.masked().items():
        shown = (",".join(value) if isinstance(value, tuple)
                 else str(value).lower() if isinstance(value, bool) else value)
        if name == "LLM_PROVIDER" and value == "auto":  # say what "auto" chose (a comment .env files allow)
            shown = f"auto  # resolves to {settings.provider}"
        lines.append(f"{name}={shown}\n")
    try:
        sys.stdout.writelines(lines)
        sys.stdout.flush()
    except BrokenPipeError:  # `msev15 config | head`: the reader has all it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
    return 0


def _port(raw: str) -> int:
    value = int(raw)
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError("must be between 1 and 65535")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="msev15", description="MSEv15E2E customer-service agent")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser(
        "serve", help="run the REST + SSE service",
        description="Run the REST + SSE service (chat, streams, AG-UI, AI SDK, sessions, health, docs, "
                    "playground) on SERVER_HOST:SERVER_PORT until SIGINT or SIGTERM, then drain in-flight "
                    "answers and exit 0. Settings come from the environment and ./.env (see msev15 config); "
                    "exit code 2 reports every configuration problem at once.")
    serve.add_argument("--env-file", help="read settings from this file (default: ./.env if present)")
    serve.add_argument("--host", help="override SERVER_HOST")
    serve.add_argument("--port", type=_port, help="override SERVER_PORT")
    serve.add_argument("--with-reference-servers", action="store_true",
                       help="also run the reference complaints and escalation MCP servers (supervised, loopback)")
    config = commands.add_parser("config", help="print the effective settings (secrets masked)",
                                 description="Print every setting the service would use, one VARIABLE=value "
                                             "per line, secrets masked; exit 2 on bad configuration.")
    config.add_argument("--env-file", help="read settings from this file too (the environment wins)")
    add_keys_parser(commands)
    commands.add_parser("complaints-mcp", help="run the reference complaints MCP server", add_help=False)
    commands.add_parser("escalation-mcp", help="run the EscalationComms MCP server", add_help=False)

    # The MCP servers parse their own flags.
    if argv and argv[0] == "complaints-mcp":
        from msev15.complaints.cli import main as complaints_main

        return complaints_main(argv[1:])
    if argv and argv[0] == "escalation-mcp":
        from msev15.escalation.cli import main as escalation_main

        return escalation_main(argv[1:])
    args = parser.parse_args(argv)
    if args.command == "serve":
        return _serve_command(args)
    if args.command == "keys":
        return keys_command(args)
    return _config_command(args)
