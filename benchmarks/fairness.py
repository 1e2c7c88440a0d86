"""Scenario 6: fairness between tenants, and memory per session at the caps.

Fairness: a service with a slow model (``tokens`` × ``delay`` per answer) and
``max_concurrent`` turn slots, each tenant allowed a quarter of them (the shipped rule). A victim
tenant chats on a few connections alone (its unloaded p99), then again while an attacker tenant
floods with many connections, each chat a new session so nothing serializes per session. Target:
the victim's p99 under the flood at most twice its unloaded p99. The attacker's refusals (429
tenant_busy once its queue is full) are reported, and so is the same flood against a service
whose per-tenant limit is the global one (one tenant may fill every slot; round-robin then gives
the victim the next slot that frees, so it waits at most about one attacker turn).

Memory at the caps: sessions filled past SESSION_MAX_BYTES with messages of MAX_MESSAGE_CHARS,
measured in this process (RSS before and after), so the cost of a full session is known.
"""

from __future__ import annotations

import asyncio
import gc
import json
import sys
import time
from typing import Any

import psutil

from benchmarks.collect import Collector, ratio
from benchmarks.config import BenchConfig
from benchmarks.httpwire import json_post
from benchmarks.load import CHAT, Expect, RequestFactory, closed_loop
from benchmarks.servers import ROOT, Sampler, ServerProcess
from benchmarks.stats import LoadResult

TOKENS = 10
DELAY = 0.01  # about 0.1 s a turn
MAX_CONCURRENT = 8  # the per-tenant default is a quarter: 2
VICTIM_CONNECTIONS = 2
ATTACKER_CONNECTIONS = 200
# Each attacker connection sends again as soon as it is answered, but about once a second at most: the
# flood keeps its queue full (turns end ~20 a second, ~100 connections are refused and retry), so
# this measures scheduling. A flood of instant retries measures CPU exhaustion instead, which is
# what the per-IP and per-tenant rate limits are for.
# Four groups with slightly different intervals, so the retries do not fall into step and arrive
# as one burst a second.
ATTACKER_INTERVALS = (0.85, 0.95, 1.05, 1.15)
FULL_SESSIONS = 200


def _tenant_chat(tenant: str, tag: str = "") -> RequestFactory:
    def build(conn: int, n: int) -> bytes:
        return json_post(CHAT, {"session_id": f"{tenant}{tag}-{conn}-{n}", "message": "hi", "tenant_id": tenant})

    return build


async def _victim(port: int, seconds: float) -> LoadResult:
    return await closed_loop(port, _tenant_chat("victim"), connections=VICTIM_CONNECTIONS, duration=seconds,
                             max_requests=100_000, expect=Expect(contains=b'"message_count"'))


async def _attack(port: int, seconds: float) -> LoadResult:
    group = ATTACKER_CONNECTIONS // len(ATTACKER_INTERVALS)
    parts = await asyncio.gather(*(
        closed_loop(port, _tenant_chat("attacker", f"g{i}"), connections=group, duration=seconds,
                    max_requests=10_000_000,
                    expect=Expect(contains=b'"message_count"'), interval=interval)
        for i, interval in enumerate(ATTACKER_INTERVALS)))
    return LoadResult.merge(parts)


async def _flooded(port: int, seconds: float) -> tuple[LoadResult, dict[str, Any]]:
    """The attacker runs in a process of its own: in the victim's process its tight loop of 429s
    would slow the victim's own client and be measured as the service's latency."""
    attacker = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "benchmarks.fairness", str(port), str(seconds + 1.0), cwd=ROOT,
        stdout=asyncio.subprocess.PIPE)
    try:
        await asyncio.sleep(0.5)  # the flood's queue fills first
        victim = await _victim(port, seconds)
    finally:
        out, _ = await asyncio.wait_for(attacker.communicate(), seconds + 30)
    return victim, json.loads(out)


def _memory_at_the_caps() -> dict[str, Any]:
    from msev15.config import Settings
    from msev15.store.sessions import SessionStore

    defaults = Settings.defaults()
    store = SessionStore(3600, max_messages=defaults.session_max_messages, max_sessions=FULL_SESSIONS,
                         max_bytes=defaults.session_max_bytes)
    chars = defaults.max_message_chars
    me = psutil.Process()
    gc.collect()
    before = me.memory_info().rss
    turns = defaults.session_max_bytes // (2 * chars) + 3  # past the budget
    for s in range(FULL_SESSIONS):
        for t in range(turns):
            store.commit_turn("bench", f"full-{s}", f"{s}-{t}-" + "q" * chars, time.time(), (),
                              f"{s}-{t}-" + "a" * chars)
    gc.collect()
    after = me.memory_info().rss
    sizes = [store.get("bench", f"full-{s}").size for s in range(FULL_SESSIONS)]  # type: ignore[union-attr]
    per_session = (after - before) / FULL_SESSIONS
    return {"sessions": FULL_SESSIONS, "message_chars": chars, "turns_sent_per_session": turns,
            "session_max_bytes": defaults.session_max_bytes, "max_session_bytes_kept": max(sizes),
            "rss_per_full_session_kib": round(per_session / 1024, 1),
            "rss_per_full_session_over_budget": round(per_session / defaults.session_max_bytes, 3)}


async def _flood_run(per_tenant: str, seconds: float, cores: frozenset[int] | None,
                     collector: Collector | None) -> tuple[LoadResult, LoadResult, dict[str, Any], dict[str, Any]]:
    """The victim alone, then flooded, against a service whose per-tenant turn limit is
    ``per_tenant`` (0: the shipped rule, a quarter of the slots)."""
    server = await ServerProcess.start("service-fairness", "--app", "service", "--tokens", str(TOKENS),
                                       "--delay", str(DELAY), "--max-concurrent-turns", str(MAX_CONCURRENT),
                                       "--per-tenant-turns", per_tenant, cores=cores)
    try:
        async with Sampler(server) as sampler:
            alone = await _victim(server.port, seconds)
            victim, flood = await _flooded(server.port, seconds)
        if collector is not None:
            collector.curve("fairness/service", sampler.curve(sampler.samples[0].at))
    finally:
        await server.stop()
    return alone, victim, flood, sampler.summary()


async def fairness(cfg: BenchConfig, cores: frozenset[int] | None, collector: Collector) -> None:
    seconds = max(2.0, cfg.phase_seconds / 2)
    print(f"Scenario 6: fairness ({ATTACKER_CONNECTIONS} attacker connections vs {VICTIM_CONNECTIONS} victim "
          f"connections, {MAX_CONCURRENT} turn slots, ~{TOKENS * DELAY:g}s answers)", flush=True)
    alone, victim, flood, server = await _flood_run("0", seconds, cores, collector)
    # The same flood when one tenant may take every slot (AGENT_MAX_CONCURRENT_TURNS_PER_TENANT set
    # to the global limit): round-robin still gives the victim the next slot that frees.
    all_alone, all_victim, _, _ = await _flood_run(str(MAX_CONCURRENT), seconds, cores, None)
    memory = _memory_at_the_caps()
    p99_alone, p99_flooded = alone.latency_ms()["p99"], victim.latency_ms()["p99"]
    all_ratio = ratio(all_victim.latency_ms()["p99"], all_alone.latency_ms()["p99"])
    refused = (flood.get("error_kinds") or {}).get("HTTP 429", 0)
    collector.scenarios["6_fairness"] = {
        "turn_slots": MAX_CONCURRENT, "per_tenant_slots": max(1, MAX_CONCURRENT // 4), "answer_s": TOKENS * DELAY,
        "victim_alone": alone.summary(), "victim_flooded": victim.summary(),
        "attacker": {**flood, "refused_429": refused},
        "p99_ratio": ratio(p99_flooded, p99_alone), "server": server, "memory_at_caps": memory,
        "per_tenant_all_slots": {"victim_alone": all_alone.summary(), "victim_flooded": all_victim.summary(),
                                 "p99_ratio": all_ratio},
    }
    print(f"    victim p99 {p99_alone} ms alone, {p99_flooded} ms flooded; attacker {flood['completed']} answered, "
          f"{refused} refused; with every slot open to one tenant: {all_ratio} x", flush=True)
    collector.target("10.fairness_p99", "victim p99 under another tenant's flood / unloaded p99",
                     ratio(p99_flooded, p99_alone), "<=", 2.0, "x")
    collector.target("10.victim_errors", "victim errors under the flood", victim.error_count, "==", 0)
    collector.report("10.fairness_all_slots", "the same, when one tenant may take every slot (per-tenant limit = "
                     "global)", all_ratio, "x")
    collector.target("10.memory_full_session", "RSS per session at SESSION_MAX_BYTES / SESSION_MAX_BYTES",
                     memory["rss_per_full_session_over_budget"], "<=", 1.5, "x")


if __name__ == "__main__":  # the attacker: python -m benchmarks.fairness PORT SECONDS
    print(json.dumps(asyncio.run(_attack(int(sys.argv[1]), float(sys.argv[2]))).summary()), flush=True)
