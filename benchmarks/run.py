"""``python -m benchmarks.run`` (``make bench``): the service against a bare aiohttp reference.

Starts the servers as separate processes on 127.0.0.1 (pinned to their own core when there are
two or more), drives them with the same load generator, prints PASS/MISS per target and writes
``benchmarks/results/latest.{json,md,png}``. ``--quick`` runs a small version to check the
machinery (its numbers prove nothing; it writes ``quick.*``).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import platform
import sys
import time
import traceback
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

from benchmarks.collect import Collector
from benchmarks.config import BenchConfig
from benchmarks.defaults import chat_on_defaults
from benchmarks.fairness import fairness
from benchmarks.mcp_isolation import mcp_isolation
from benchmarks.model import relay
from benchmarks.noisy import noisy_tenant
from benchmarks.profile_chat import profile_chat
from benchmarks.profile_lookup import measure as profile_lookup
from benchmarks.report import write_chart, write_results
from benchmarks.scale import concurrency, sessions
from benchmarks.servers import ServerProcess
from benchmarks.stores import stores
from benchmarks.system import CpuPlan, pin, plan_cpus, raise_nofile
from benchmarks.tracing_off import tracing_off
from benchmarks.traffic import chat_and_health, startup, streaming
from benchmarks.turnlog import measure as turnlog_memory

SCENARIOS = ("chat", "streaming", "concurrency", "sessions", "startup", "relay", "defaults", "fairness", "noisy",
             "turnlog", "stores", "profiles", "profile_chat", "mcp_isolation", "tracing_off")
RESULTS_DIR = Path(__file__).resolve().parent / "results"


async def _traffic(cfg: BenchConfig, plan: CpuPlan, selected: set[str], collector: Collector) -> None:
    """Scenarios 1, 2 and 5 share one reference and one service process."""
    tokens = ["--tokens", str(cfg.tokens)]
    ref = await ServerProcess.start("reference", "--app", "reference", *tokens, cores=plan.server)
    try:
        if selected & {"chat", "streaming"}:
            svc = await ServerProcess.start("service", "--app", "service", *tokens, cores=plan.server)
            try:
                if "chat" in selected:
                    await chat_and_health(cfg, ref, svc, collector)
                if "streaming" in selected:
                    await streaming(cfg, ref, svc, collector)
            finally:
                await svc.stop()
            # Collector pauses over both scenarios: the first thing to check when a p99 tail appears.
            collector.scenarios["gc_pauses"] = {
                s.label: {k: v for k, v in s.events.get("gc", {}).items() if k != "event"} for s in (ref, svc)}
        if "defaults" in selected:
            await chat_on_defaults(cfg, ref, plan.server, collector)
    finally:
        await ref.stop()


async def _turnlog(collector: Collector) -> None:
    """Scenario 8: memory of retained turn logs (in this process: a data structure, no server)."""
    figures = turnlog_memory()
    collector.scenarios["turnlog"] = figures
    collector.target("8.within_bound", "events retained after 10,000 finished turns, of the bound",
                     figures["events_retained"] / figures["event_bound"], "<=", 1.0, "x")
    collector.report("8.bytes_per_event", "memory per retained event", figures["bytes_per_event"], "B")
    collector.report("8.bytes_at_bound", "memory at STREAM_MAX_RETAINED_EVENTS", figures["bytes_at_bound"] / 2**20,
                     "MiB")


async def _profiles(collector: Collector) -> None:
    """Scenario 12: the per-turn profile read of each store (in this process, no server)."""
    figures = await profile_lookup()
    collector.scenarios["profiles"] = figures
    for kind in ("memory", "sqlite", "redis"):
        collector.report(f"12.{kind}_current_version", f"profile lookup per turn, {kind} store",
                         figures[kind]["current_version_us"], "us")
    collector.report("12.sqlite_to_thread", "the same SQLite lookup through a worker thread (not used)",
                     figures["sqlite"]["to_thread_us"], "us")


async def _run(cfg: BenchConfig, selected: set[str], command: str) -> dict[str, Any]:
    plan = plan_cpus()
    pin(plan.client)
    nofile = raise_nofile()
    collector = Collector()
    load_start = [round(x, 2) for x in os.getloadavg()]
    print(f"Benchmarks: {', '.join(s for s in SCENARIOS if s in selected)}; {plan.describe()}; "
          f"open-files limit {nofile}", flush=True)
    steps: list[tuple[str, Callable[[], Awaitable[None]]]] = [
        ("chat/streaming/defaults", lambda: _traffic(cfg, plan, selected, collector)),
        ("concurrency", lambda: concurrency(cfg, plan.server, collector)),
        ("sessions", lambda: sessions(cfg, plan.server, collector)),
        ("startup", lambda: startup(cfg, plan.server, collector)),
        ("relay", lambda: relay(cfg, plan, collector)),
        ("fairness", lambda: fairness(cfg, plan.server, collector)),
        ("noisy", lambda: noisy_tenant(cfg, plan.server, collector)),
        ("turnlog", lambda: _turnlog(collector)),
        ("stores", lambda: stores(cfg, plan.server, collector)),
        ("profiles", lambda: _profiles(collector)),
        ("profile_chat", lambda: profile_chat(cfg, plan.server, collector)),
        ("mcp_isolation", lambda: mcp_isolation(cfg, plan.server, collector)),
        ("tracing_off", lambda: tracing_off(cfg, plan, collector)),
    ]
    for name, step in steps:
        if not selected & set(name.split("/")):
            continue
        try:
            await step()
        except Exception as exc:  # keep what was measured and go on; the traceback goes to stderr
            traceback.print_exc()
            collector.note(f"scenario {name} stopped early: {type(exc).__name__}: {exc}")
    return {
        "command": command,
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "elapsed_s": round(time.perf_counter() - collector.started, 1),
        "environment": {
            "python": platform.python_version(), "aiohttp": version("aiohttp"), "aiohttp_sse": version("aiohttp-sse"),
            "platform": platform.platform(terse=True), "cpus": os.cpu_count(), "pinning": plan.describe(),
            "open_files_limit": nofile, "loadavg_start": load_start,
            "loadavg_end": [round(x, 2) for x in os.getloadavg()],
            "load_generator": "benchmarks.load (asyncio protocols, HTTP/1.1 keep-alive)",
        },
        "config": dataclasses.asdict(cfg),
        "scenarios": collector.scenarios,
        "targets": [t.to_dict() for t in collector.targets],
        "reported": collector.reported,
        "all_pass": bool(collector.targets) and all(t.passed for t in collector.targets),
        "notes": collector.notes,
        "curves": collector.curves,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run",
                                     description="Benchmark the service against a bare aiohttp reference.")
    parser.add_argument("--quick", action="store_true", help="a small run to check the machinery (writes quick.*)")
    parser.add_argument("--only", action="append", choices=SCENARIOS, help="run only this scenario (repeatable)")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="results folder")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args(argv)
    cfg = BenchConfig.quick() if args.quick else BenchConfig()
    name = "quick" if args.quick else "latest"
    command = ("python -m benchmarks.run" + (" --quick" if args.quick else "")
               + "".join(f" --only {o}" for o in args.only or ()))
    if not args.quick and not args.only:
        command = "make bench"
    results = asyncio.run(_run(cfg, set(args.only or SCENARIOS), command))
    json_path, md_path = write_results(results, args.out, name)
    chart = write_chart(results, args.out / f"{name}.png")
    passed = sum(t["status"] == "PASS" for t in results["targets"])
    print(f"\n{passed}/{len(results['targets'])} targets PASS in {results['elapsed_s']:.0f} s. "
          f"Wrote {json_path.name}, {md_path.name} and {chart.name} in {args.out}.", flush=True)
    for target in results["targets"]:
        if target["status"] != "PASS":
            print(f"  MISS {target['id']}: {target['target']} = {target['value']} {target['unit']} "
                  f"(limit {target['op']} {target['limit']:g})", flush=True)
    if args.strict and not results["all_pass"]:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
