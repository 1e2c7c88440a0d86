"""``msev15 serve | complaints-mcp | escalation-mcp | config``."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Sequence

from aiohttp import web

from msev15 import __version__
from msev15.agent.context import MAILER, MCP, REGISTRY
from msev15.apikeys_cli import add_parser as add_keys_parser
from msev15.apikeys_cli import keys_command
from msev15.app import create_app
from msev15.banner import banner, security_warnings
from msev15.common.telemetry import TelemetryConfig
from msev15.config import Settings, command_settings
from msev15.evals.cli import add_parser as add_eval_parser
from msev15.evals.cli import eval_command
from msev15.handlers.health_monitor import HEALTH, readiness_warnings
from msev15.logs.service import setup_logging
from msev15.logs.writer import close_logging, flush_logging
from msev15.profiles_cli import add_parser as add_profile_parser
from msev15.profiles_cli import profile_command
from msev15.server.serve import serve
from msev15.supervisor import Supervisor

log = logging.getLogger("app.serve")


def _say(*lines: str) -> None:
    print(*lines, sep="\n", flush=True)


def _print_banner(app: web.Application, settings: Settings, supervisor: Supervisor | None = None) -> None:
    # Log lines are written by a thread: let the start-up ones out first, so none lands inside the banner.
    flush_logging()
    registry, connections = app[REGISTRY], app[MCP]
    monitor = app[HEALTH]
    warnings = security_warnings(settings) + readiness_warnings(
        settings, model_status=monitor.last_model_status, mailer=app[MAILER], mcp=connections,
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


async def _serve_app(settings: Settings, supervisor: Supervisor | None = None) -> int:
    # Tracing reads only the standard OTEL_* variables of the process (not .env), as every SDK does.
    app = await create_app(settings, telemetry=TelemetryConfig.from_env(os.environ, "msev15"))
    return await serve(app, settings, on_serving=lambda: _print_banner(app, settings, supervisor),
                       after_cleanup=supervisor.stop if supervisor is not None else None)


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


def _serve_command(args: argparse.Namespace) -> int:
    settings = command_settings(args.env_file)
    if settings is None:
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
    settings = command_settings(args.env_file)
    if settings is None:
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
    add_profile_parser(commands)
    add_eval_parser(commands)
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
    if args.command == "profile":
        return profile_command(args)
    if args.command == "eval":
        return eval_command(args)
    return _config_command(args)
