"""One benchmark server process: ``python -m benchmarks.launcher --app service|reference``.

The runner starts one of these per server so that the server's CPU and RSS can be measured on
their own and the process can be pinned to its own core. It listens on 127.0.0.1 (a free port),
prints JSON lines on stdout (``seeded`` then ``ready`` with the port) and runs until SIGTERM,
SIGINT, its stdin closing (the runner went away) or ``--max-seconds``, whichever comes first.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import os
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psutil
from aiohttp import web

from benchmarks.provider import BenchProvider
from benchmarks.reference import create_reference_app
from benchmarks.relay import create_relay_app, upstream_app
from benchmarks.system import pin, raise_nofile
from msev15.store.base import SESSIONS
from msev15.store.memory import MemorySessions

log = logging.getLogger("bench.launcher")
SEED_TENANT = "bench"


def _emit(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


class GcWatch:
    """Times the collector's pauses (``gc.callbacks``), so a latency tail can be told apart from GC."""

    def __init__(self) -> None:
        self._started = (0.0, 0.0)
        self.collections = [0, 0, 0]
        self.total = [0.0, 0.0, 0.0]
        self.longest = [0.0, 0.0, 0.0]
        self.longest_cpu = [0.0, 0.0, 0.0]

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = (time.perf_counter(), time.thread_time())
            return
        gen = info["generation"]
        pause = time.perf_counter() - self._started[0]
        # CPU time too: on a shared core the wall-clock pause also counts time the process was preempted.
        cpu = time.thread_time() - self._started[1]
        self.collections[gen] += 1
        self.total[gen] += pause
        self.longest[gen] = max(self.longest[gen], pause)
        self.longest_cpu[gen] = max(self.longest_cpu[gen], cpu)

    def summary(self) -> dict[str, Any]:
        return {f"gen{g}": {"collections": self.collections[g], "total_ms": round(self.total[g] * 1000, 1),
                            "max_ms": round(self.longest[g] * 1000, 2),
                            "max_cpu_ms": round(self.longest_cpu[g] * 1000, 2)} for g in range(3)}


def service_settings(workdir: Path, max_concurrent_turns: int, upstream: str = "", llm_api: str = "chat",
                     session_store: str = "memory", redis_url: str = "", per_tenant_turns: int | None = None,
                     tenant_rate_per_minute: int = 0, database_url: str = "") -> Any:
    """The service as deployed, made hermetic: offline (or the real openai client against
    ``upstream``), no MCP, files under ``workdir``."""
    from msev15.config import Settings

    model = {"llm_provider": "openai", "openai_base_url": f"{upstream.rstrip('/')}/v1", "openai_model": "bench-relay",
             "llm_api": llm_api} if upstream else {"llm_provider": "offline"}
    return Settings.defaults(**model,
        server_host="127.0.0.1", log_level="WARNING", log_to_file=False,
        log_file_path=str(workdir / "app.log"), mcp_server_url="",
        order_db_path=str(workdir / "orders.db"), order_db_seed=False,
        api_keys_db_path=str(workdir / "api_keys.db"),  # and the tenant profiles beside them
        email_outbox_dir=str(workdir / "outbox"), email_attachments_dir=str(workdir / "attachments"),
        agent_max_concurrent_turns=max_concurrent_turns, shutdown_timeout_seconds=2.0,
        # Most scenarios run every turn in one tenant: its share of the turns and its queue must not
        # refuse what the scenario runs at once (they would answer 429 tenant_busy). The fairness
        # scenario passes 0: the shipped rule (a quarter of the global limit).
        agent_max_concurrent_turns_per_tenant=max_concurrent_turns if per_tenant_turns is None else per_tenant_turns,
        agent_max_queued_turns_per_tenant=max(100, max_concurrent_turns),
        session_store=session_store, session_db_path=str(workdir / "sessions.db"), redis_url=redis_url,
        database_url=database_url, rate_limit_per_tenant_per_minute=tenant_rate_per_minute,
    )


def seed_sessions(store: Any, sessions: int, messages: int, tenant: str = SEED_TENANT) -> dict[str, Any]:
    """Fill the store through ``commit_turn``: ``sessions`` × ``messages`` distinct messages.

    Returns the RSS growth and the bytes of message text stored, so the runner can report the
    memory each session costs beyond its text.
    """
    if sessions < 1 or messages < 2 or messages % 2:
        raise ValueError("seeding needs >= 1 session and an even number (>= 2) of messages per session")
    me = psutil.Process()
    gc.collect()
    before = me.memory_info().rss
    started = time.perf_counter()
    text_bytes = 0
    for s in range(sessions):
        session_id = f"seed-{s:07d}"
        for t in range(messages // 2):
            user = f"Hello, where is my order ORD-{s:07d}{t}? It has not arrived yet."
            answer = f"Order ORD-{s:07d}{t} shipped on day {t} and should arrive within two business days."
            store.commit_turn(tenant, session_id, user, time.time(), (), answer)
            text_bytes += len(user) + len(answer)  # ASCII: characters are bytes
    seconds = time.perf_counter() - started
    gc.collect()
    after = me.memory_info().rss
    return {"sessions": sessions, "messages_per_session": messages, "tenant": tenant,
            "rss_before": before, "rss_after": after, "text_bytes": text_bytes, "seconds": round(seconds, 2)}


async def _build(args: argparse.Namespace, workdir: Path) -> web.Application:
    if args.app == "reference":
        logging.basicConfig(level=logging.WARNING)
        return create_reference_app(args.tokens, args.delay)
    if args.app == "relay":
        logging.basicConfig(level=logging.WARNING)
        return create_relay_app(args.upstream)
    from msev15.app import create_app
    from msev15.logs.service import setup_logging

    settings = service_settings(workdir, args.max_concurrent_turns, args.upstream, args.llm_api,
                                args.session_store, args.redis_url, args.per_tenant_turns,
                                args.tenant_rate_per_minute, args.database_url)
    setup_logging(settings)
    if args.upstream:  # the real openai client against the instant upstream
        return await create_app(settings)
    return await create_app(settings, provider=BenchProvider(args.tokens, args.delay))


def _runner(app: web.Application, kind: str) -> web.AppRunner:
    """The service runs on the runner ``msev15 serve`` uses (its connection guard, its keep-alive);
    the reference and the relay on aiohttp's own."""
    if kind != "service":
        return web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=5.0)
    from msev15.config import SETTINGS
    from msev15.server.connections import CONNECTIONS, ConnectionLimits, GuardedRunner

    settings = app[SETTINGS]
    limits = ConnectionLimits(settings.http_header_timeout_seconds, settings.http_max_connections)
    return GuardedRunner(app, limits, app[CONNECTIONS], handle_signals=False, access_log=None,
                         shutdown_timeout=5.0, keepalive_timeout=settings.keepalive_seconds)


def _watch_stdin(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
    fd = sys.stdin.fileno()

    def readable() -> None:
        try:
            data = os.read(fd, 4096)
        except OSError:
            data = b""
        if not data:
            loop.remove_reader(fd)
            stop.set()

    loop.add_reader(fd, readable)


async def _serve(args: argparse.Namespace) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if args.watch_stdin:
        _watch_stdin(loop, stop)
    watch = GcWatch()
    gc.callbacks.append(watch)
    with tempfile.TemporaryDirectory(prefix="msev15-bench-") as tmp:
        if args.app == "upstream":
            runner = await upstream_app(args.tokens)
        else:
            app = await _build(args, Path(tmp))
            runner = _runner(app, args.app)
            await runner.setup()
        try:
            if args.seed_sessions:
                sessions = app[SESSIONS]
                assert isinstance(sessions, MemorySessions), "seeding fills the in-memory store only"
                _emit("seeded", **seed_sessions(sessions.store, args.seed_sessions, args.seed_messages))
            if args.app != "upstream":  # the scripted server listens already
                site = web.TCPSite(runner, "127.0.0.1", 0, backlog=4096)
                await site.start()
            _emit("ready", port=runner.addresses[0][1], pid=os.getpid(), nofile=args.nofile)
            try:
                await asyncio.wait_for(stop.wait(), args.max_seconds)
            except TimeoutError:
                log.warning("stopping after --max-seconds=%s", args.max_seconds)
        finally:
            await runner.cleanup()
            if args.app == "service":
                from msev15.logs.writer import close_logging

                close_logging()
            gc.callbacks.remove(watch)
            _emit("gc", **watch.summary())
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.launcher", description=__doc__.splitlines()[0])
    parser.add_argument("--app", choices=("service", "reference", "relay", "upstream"), required=True)
    parser.add_argument("--upstream", default="", help="service/relay: the OpenAI-compatible upstream's URL")
    parser.add_argument("--llm-api", choices=("chat", "responses"), default="chat", help="service: LLM_API")
    parser.add_argument("--session-store", choices=("memory", "sqlite", "redis", "postgres"), default="memory",
                        help="service: SESSION_STORE (sqlite files go in the launcher's temp dir)")
    parser.add_argument("--redis-url", default="", help="service: REDIS_URL for --session-store redis")
    parser.add_argument("--database-url", default="", help="service: DATABASE_URL for --session-store postgres")
    parser.add_argument("--tokens", type=int, default=20, help="tokens per answer")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds before each token (slow model)")
    parser.add_argument("--per-tenant-turns", type=int, default=None,
                        help="service: AGENT_MAX_CONCURRENT_TURNS_PER_TENANT (0: a quarter of the global limit, "
                             "the shipped rule; default: the global limit, for one-tenant scenarios)")
    parser.add_argument("--tenant-rate-per-minute", type=int, default=0,
                        help="service: RATE_LIMIT_PER_TENANT_PER_MINUTE (0: off)")
    parser.add_argument("--max-concurrent-turns", type=int, default=100,
                        help="the service's AGENT_MAX_CONCURRENT_TURNS")
    parser.add_argument("--seed-sessions", type=int, default=0, help="pre-fill this many sessions (service)")
    parser.add_argument("--seed-messages", type=int, default=10, help="messages per seeded session")
    parser.add_argument("--cpu", type=int, action="append", help="pin to this core (repeatable)")
    parser.add_argument("--max-seconds", type=float, default=900.0, help="stop by itself after this long")
    parser.add_argument("--watch-stdin", action="store_true", help="stop when stdin closes")
    args = parser.parse_args(argv)
    if args.seed_sessions and args.app != "service":
        parser.error("--seed-sessions needs --app service")
    if args.seed_sessions and args.session_store != "memory":
        parser.error("--seed-sessions needs --session-store memory")
    if args.app == "relay" and not args.upstream:
        parser.error("--app relay needs --upstream")
    if args.cpu:
        pin(frozenset(args.cpu))
    args.nofile = raise_nofile()
    return asyncio.run(_serve(args))


if __name__ == "__main__":
    raise SystemExit(main())
