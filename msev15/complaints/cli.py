"""``msev15 complaints-mcp``: run the reference complaints MCP server over Streamable HTTP."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sqlite3
import sys
from collections.abc import Mapping

from msev15.common.env import LOG_LEVELS, boolean
from msev15.common.telemetry import TelemetryConfig
from msev15.logs.writer import close_logging, setup_logging
from msev15.mcpkit.auth import bind_refusal
from msev15.mcpkit.runner import McpHttpServer, bind_socket

from .server import MCP_PATH, build_app, build_server, close_listen_streams
from .store import ComplaintStore

log = logging.getLogger("complaints.cli")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
DEFAULT_DB_PATH = "./data/complaints.db"


def _port(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be an integer between 0 and 65535, got {raw!r}")
    return value


def _parser(environ: Mapping[str, str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="msev15 complaints-mcp",
        description=f"Serve the complaints MCP tools over Streamable HTTP at http://HOST:PORT{MCP_PATH}.",
    )
    parser.add_argument("--host", default=DEFAULT_HOST, help=f"interface to bind (default {DEFAULT_HOST})")
    parser.add_argument("--port", type=_port, default=DEFAULT_PORT,
                        help=f"TCP port, 0 for any free one (default {DEFAULT_PORT})")
    parser.add_argument("--db", default=environ.get("COMPLAINTS_DB_PATH") or DEFAULT_DB_PATH,
                        help=f"SQLite file (default $COMPLAINTS_DB_PATH or {DEFAULT_DB_PATH})")
    parser.add_argument("--log-level", type=str.upper, default=(environ.get("LOG_LEVEL") or "INFO").upper(),
                        choices=LOG_LEVELS,
                        help="default $LOG_LEVEL or INFO")
    return parser


def _url(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}{MCP_PATH}"


def main(argv: list[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Run until SIGINT/SIGTERM. Returns the process exit code (0 after a clean stop, 2 when it
    must not start: a non-loopback address without MCP_AUTH_TOKEN)."""
    environ = os.environ if environ is None else environ
    args = _parser(environ).parse_args(argv)
    token = environ.get("MCP_AUTH_TOKEN", "").strip()
    try:
        allow = boolean(environ.get("MCP_ALLOW_UNAUTHENTICATED") or "false")
    except ValueError as exc:
        print(f"error: MCP_ALLOW_UNAUTHENTICATED: {exc}", file=sys.stderr)
        return 2
    refusal = bind_refusal(args.host, token, allow)
    if refusal:
        print(f"error: {refusal}", file=sys.stderr)
        return 2
    setup_logging(level=args.log_level, secrets=(token,) if token else ())
    try:
        return _run(args, token, TelemetryConfig.from_env(environ, "msev15-complaints"))
    finally:
        close_logging()


def _run(args: argparse.Namespace, token: str, telemetry: TelemetryConfig | None) -> int:
    try:
        store = ComplaintStore(args.db)
    except (sqlite3.Error, OSError) as exc:
        print(f"error: cannot open complaints database {args.db!r}: {exc}", file=sys.stderr)
        return 1
    try:
        try:
            sock = bind_socket(args.host, args.port)
        except OSError as exc:
            print(f"error: {exc.strerror or exc}", file=sys.stderr)
            return 1
        server = build_server(store)
        http = McpHttpServer(
            build_app(server, host=args.host),
            handle_signals=True,
            before_shutdown=lambda: close_listen_streams(server),
            log_level=args.log_level,
            auth_token=token,
            telemetry=telemetry,
        )
        log.info("complaints MCP server listening on %s (database %s, %s)",
                 _url(args.host, sock.getsockname()[1]), args.db,
                 "bearer token required" if token else "no token: any local caller is trusted")
        try:
            asyncio.run(http.serve(sockets=[sock]))
        except SystemExit as exc:  # uvicorn exits this way when the app fails to start
            print(f"error: the complaints MCP server failed to start (code {exc.code})", file=sys.stderr)
            return 1
        finally:
            sock.close()
        log.info("complaints MCP server stopped")
        return 0
    finally:
        store.close()
