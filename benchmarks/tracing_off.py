"""Scenario 15: what tracing costs a chat turn when it is off (issue 26: "costs nothing measurable").

Without an OTLP endpoint none of the tracing modules (nor the OpenTelemetry SDK) is imported; what
stays on a turn's path are three checks that find tracing off:

- ``model``: per model request, the OpenAI-compatible provider reads ``request_headers`` (None)
  and keeps its fixed request options;
- ``mcp``: per MCP tool call, the connection's ``spans is None``;
- ``log``: per log line formatted, the empty ``%(trace)s`` field.

A build without them cannot be made at the launcher without changing the service, so they are
counted and timed instead, and set against what a chat turn costs the service:

1. Count, in this process: chat turns through the service built as deployed with tracing off
   (the real openai client against the instant upstream of scenario 6, log level INFO, the
   shipped default, so every line a turn writes is formatted), counting model requests, MCP calls
   and formatted lines per turn.
2. Time each check on the real objects, in this process: a loop with the check against the same
   loop without it, alternating, in pairs; the median difference per call (CPU time).
3. The service's CPU per chat turn: scenario 1's chat load against the service process with the
   real openai client and the instant upstream (its own process), server CPU over completed turns.

Target: the checks' CPU per turn / the service's CPU per turn <= 0.02. The lines are counted at
INFO while the loaded service logs at WARNING (the launcher's level), so the share is overstated,
not understated.
"""

from __future__ import annotations

import io
import logging
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.collect import Collector, ratio
from benchmarks.config import BenchConfig
from benchmarks.load import CHAT, MESSAGE, Expect, chat_factory, closed_loop
from benchmarks.servers import ServerProcess
from benchmarks.system import CpuPlan

HOOKS = ("model", "mcp", "log")


async def count_hooks(turns: int, tokens: int) -> dict[str, float]:
    """Model requests, MCP tool calls and formatted log lines per chat turn, tracing off."""
    from aiohttp.test_utils import TestClient, TestServer

    from benchmarks.launcher import service_settings
    from benchmarks.provider import answer_tokens
    from msev15.agent.mcp_client import McpConnection
    from msev15.app import create_app
    from msev15.logs.writer import RedactingFormatter, close_logging, flush_logging, setup_logging
    from tests.llm_server import Reply, ScriptedLLM

    counts = dict.fromkeys(HOOKS, 0)
    real_format, real_call = RedactingFormatter.format, McpConnection.call_tool

    def format(self: RedactingFormatter, record: logging.LogRecord) -> str:
        counts["log"] += 1
        return real_format(self, record)

    async def call_tool(self: McpConnection, *args: Any, **kwargs: Any) -> Any:
        counts["mcp"] += 1
        return await real_call(self, *args, **kwargs)

    RedactingFormatter.format = format  # type: ignore[method-assign]
    McpConnection.call_tool = call_tool  # type: ignore[method-assign]
    try:
        # The instant model of scenario 6, recording each request so they can be counted.
        async with ScriptedLLM(Reply("".join(answer_tokens(tokens)).rstrip(), fast=True)) as llm:
            with tempfile.TemporaryDirectory(prefix="msev15-bench-") as tmp:
                settings = service_settings(Path(tmp), 100, llm.url).replace(log_level="INFO")
                async with TestClient(TestServer(await create_app(settings))) as client:
                    setup_logging(level="INFO", stream=io.StringIO())
                    await _turn(client, "warm")  # first-turn lines (connection set-up) are not a turn's
                    flush_logging()
                    counts["log"] = counts["mcp"] = 0
                    before = len(llm.paths)
                    for n in range(turns):
                        await _turn(client, f"count-{n}")
                    flush_logging()
                    counts["model"] = len(llm.paths) - before
    finally:
        RedactingFormatter.format = real_format  # type: ignore[method-assign]
        McpConnection.call_tool = real_call  # type: ignore[method-assign]
        close_logging()
    return {hook: counts[hook] / turns for hook in HOOKS}


async def _turn(client: Any, session: str) -> None:
    resp = await client.post(CHAT, json={"session_id": session, "message": MESSAGE})
    if resp.status != 200:
        raise RuntimeError(f"chat answered {resp.status}: {await resp.text()}")


def _pair(check: Callable[[int], None], bare: Callable[[int], None], loops: int, first: bool) -> float:
    """CPU seconds per call of ``check`` beyond ``bare`` (both run ``loops`` times; ``first``:
    which goes first, so neither always runs on a warmer cache)."""
    spent = {}
    for name in (("check", "bare") if first else ("bare", "check")):
        fn = check if name == "check" else bare
        started = time.process_time()
        fn(loops)
        spent[name] = time.process_time() - started
    return (spent["check"] - spent["bare"]) / loops


def _hook_loops(provider: Any) -> dict[str, tuple[Callable[[int], None], Callable[[int], None]]]:
    """Each check as the service evaluates it, on the real objects, and the same loop without it."""
    from msev15.agent.mcp_client import McpConnection
    from msev15.agent.providers import openai_compat
    from msev15.logs.writer import CONTEXT_FIELDS, DATEFMT, FORMAT

    options = openai_compat._OPTIONS
    connection = McpConnection("bench", "http://127.0.0.1:9/mcp")
    defaults = {name: "-" for name in CONTEXT_FIELDS}
    with_trace = logging.Formatter(FORMAT, DATEFMT, defaults={**defaults, "trace": ""})
    without = logging.Formatter(FORMAT.replace("%(trace)s", ""), DATEFMT, defaults=defaults)
    record = logging.LogRecord("agent.runner", logging.INFO, __file__, 1, "Turn %s completed", ("t-1",), None)

    def model(loops: int) -> None:
        for _ in range(loops):
            extra = provider.request_headers
            _ = options if extra is None else {**options, "headers": {**options["headers"], **extra()}}

    def model_bare(loops: int) -> None:
        for _ in range(loops):
            _ = options

    def mcp(loops: int) -> None:
        for _ in range(loops):
            if connection.spans is None:
                pass

    def mcp_bare(loops: int) -> None:
        for _ in range(loops):
            pass

    def log(loops: int) -> None:
        for _ in range(loops):
            with_trace.format(record)

    def log_bare(loops: int) -> None:
        for _ in range(loops):
            without.format(record)

    return {"model": (model, model_bare), "mcp": (mcp, mcp_bare), "log": (log, log_bare)}


async def time_hooks(pairs: int, loops: int) -> dict[str, dict[str, float]]:
    """Each check's CPU per call (ns): the median over ``pairs`` alternating pairs, and its spread.
    A formatted line costs some hundred times a check, so it runs a hundredth of ``loops``."""
    from msev15.agent.providers.clients import build_client
    from msev15.agent.providers.openai_compat import OpenAIProvider
    from msev15.config import Settings

    provider = OpenAIProvider(build_client(Settings.defaults(
        llm_provider="openai", openai_api_key="bench", openai_base_url="http://127.0.0.1:9/v1")))
    try:
        loops_of = _hook_loops(provider)
    finally:
        await provider.close()
    found: dict[str, dict[str, float]] = {}
    for hook, (check, bare) in loops_of.items():
        n_loops = max(1, loops // 100) if hook == "log" else loops
        check(n_loops // 10 or 1)  # warm both before timing
        bare(n_loops // 10 or 1)
        diffs = [_pair(check, bare, n_loops, n % 2 == 0) * 1e9 for n in range(pairs)]
        found[hook] = {"ns_per_call": round(statistics.median(diffs), 2), "min_ns": round(min(diffs), 2),
                       "max_ns": round(max(diffs), 2)}
    return found


TURNS_COUNTED = 50
PAIRS, LOOPS = 21, 1_000_000


async def tracing_off(cfg: BenchConfig, plan: CpuPlan, collector: Collector) -> None:
    print("Scenario 15: the checks tracing leaves on a chat turn when it is off", flush=True)
    quick = cfg.phase_seconds < 4
    per_turn = await count_hooks(10 if quick else TURNS_COUNTED, cfg.relay_tokens)
    costs = await time_hooks(5 if quick else PAIRS, 100_000 if quick else LOOPS)
    hook_ns = sum(per_turn[h] * max(0.0, costs[h]["ns_per_call"]) for h in HOOKS)
    upstream = await ServerProcess.start("upstream-15", "--app", "upstream", "--tokens", str(cfg.relay_tokens),
                                         cores=plan.client)
    try:
        svc = await ServerProcess.start("service-15", "--app", "service", "--upstream",
                                        f"http://127.0.0.1:{upstream.port}", "--tokens", str(cfg.relay_tokens),
                                        cores=plan.server)
        try:
            expect = Expect(contains=b'"message_count"')
            await closed_loop(svc.port, chat_factory(CHAT, "warm15", cfg.session_every), connections=cfg.connections,
                              duration=cfg.warmup_seconds, max_requests=cfg.max_requests, expect=expect)
            before = svc.usage().cpu
            load = await closed_loop(svc.port, chat_factory(CHAT, "s15", cfg.session_every),
                                     connections=cfg.connections, duration=cfg.phase_seconds / 2,
                                     max_requests=cfg.max_requests, expect=expect)
            cpu = svc.usage().cpu - before
        finally:
            await svc.stop()
    finally:
        await upstream.stop()
    turn_us = 1e6 * cpu / load.completed if load.completed else None
    share = ratio(hook_ns / 1000, turn_us)
    collector.scenarios["15_tracing_off"] = {
        "hook_calls_per_turn": per_turn, "hook_cost": costs, "hook_cpu_us_per_turn": round(hook_ns / 1000, 4),
        "service": {"rate": round(load.rate, 1), "errors": load.error_count, "connections": cfg.connections,
                    "server_cpu_us_per_turn": None if turn_us is None else round(turn_us, 1)},
        "share": share, "share_unrounded": None if not turn_us else hook_ns / 1000 / turn_us,
    }
    print(f"    per turn: {per_turn}; per call (ns): { {h: costs[h]['ns_per_call'] for h in HOOKS} }; "
          f"checks {hook_ns / 1000:.3f} us of {turn_us or 0:.0f} us", flush=True)
    collector.target("15.share", "CPU of the tracing-off checks per chat turn / the service's CPU per chat turn",
                     share, "<=", 0.02, "x")
    collector.report("15.hook_cpu_per_turn", "CPU of the tracing-off checks per chat turn", hook_ns / 1000, "us")
    collector.target("15.errors", "failed chat requests", load.error_count, "==", 0)
