"""``msev15 escalation-mcp`` / ``python -m msev15.escalation``: run the EscalationComms MCP server.

Exit codes: 0 after a clean stop (SIGINT/SIGTERM), 1 when the server cannot start (port taken,
database unusable, the ``escalation`` extra not installed), 2 for bad configuration or arguments
(one line per problem on stderr).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sqlite3
import sys
from collections.abc import Mapping

from msev15.common.env import SettingsError
from msev15.common.telemetry import TelemetryConfig
from msev15.escalation.config import EscalationSettings, load_settings
from msev15.logs.writer import close_logging, setup_logging

log = logging.getLogger("escalation.cli")

# Loggers that are chatty at INFO and say nothing an operator needs.
_QUIET = ("azure.core.pipeline.policies.http_logging_policy", "azure", "uvicorn.access", "httpx", "aiosqlite")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="msev15 escalation-mcp",
        description="Serve the EscalationComms MCP tools (sendemail, get_email_status) over Streamable HTTP "
                    "at http://HOST:PORT/mcp, with GET /health and GET /metrics.",
    )
    parser.add_argument("--host", help="interface to bind (overrides HOST; default 127.0.0.1)")
    parser.add_argument("--port", help="TCP port (overrides PORT; default 8078)")
    parser.add_argument("--env-file", help="read variables from this file (default ./.env when it exists)")
    return parser


async def _serve(settings: EscalationSettings, telemetry: TelemetryConfig | None) -> None:
    # Here, not at the top: without the 'escalation' extra main() reports the ImportError's hint.
    from msev15.escalation.server import EscalationServer

    server = EscalationServer(settings, handle_signals=True, telemetry=telemetry)
    await server.start()
    try:
        await server.wait_closed()
    finally:
        await server.stop()
    log.info("EscalationComms stopped")


def main(argv: list[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Run until SIGINT/SIGTERM; returns the exit code. Flags override the environment."""
    args = _parser().parse_args(argv)
    env = dict(os.environ if environ is None else environ)
    if args.host is not None:
        env["HOST"] = args.host
    if args.port is not None:
        env["PORT"] = args.port
    try:
        settings = load_settings(args.env_file, env)
    except SettingsError as exc:
        print("escalation-mcp: invalid configuration:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return 2
    # Before the MCPServer is created, so its logging.basicConfig call changes nothing.
    setup_logging(level=settings.log_level, secrets=settings.secrets(), quiet=_QUIET)
    try:
        asyncio.run(_serve(settings, TelemetryConfig.from_env(env, "msev15-escalation")))
    except OSError as exc:
        print(f"escalation-mcp: cannot start: {exc}", file=sys.stderr)
        return 1
    except (sqlite3.Error, RuntimeError, ImportError) as exc:  # ImportError: the 'escalation' extra is missing
        print(f"escalation-mcp: cannot start: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # a second Ctrl-C while stopping
        return 130
    finally:
        close_logging()
    return 0
