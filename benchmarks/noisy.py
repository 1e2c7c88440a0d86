"""Scenario: a noisy tenant's raw request rate against another tenant's latency (issue: one tenant's
flood of chats slowed another's at the HTTP level, though turn slots stayed fair).

A service with RATE_LIMIT_PER_TENANT_PER_MINUTE set. A victim tenant chats on two connections
alone (its unloaded p50), then again while, from a process of its own, a noisy tenant sends
about ``FLOOD_RATE`` chats a second on ``FLOOD_CONNECTIONS`` keep-alive connections, naming its
tenant in the query so the limit is known before the body (nearly all of them are refused with
429). Target: the victim's p50 under the flood at most twice its unloaded p50, both on loopback.
Reported beside it: the same flood naming its tenant only in the JSON body (REST under
AUTH_MODE=none), which can be refused only after the body is decoded.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

from benchmarks.collect import Collector, ratio
from benchmarks.config import BenchConfig
from benchmarks.httpwire import json_post
from benchmarks.load import CHAT, Expect, RequestFactory, closed_loop
from benchmarks.servers import ROOT, Sampler, ServerProcess
from benchmarks.stats import LoadResult

FLOOD_CONNECTIONS = 16
FLOOD_RATE = 240  # chats a second, all connections together
# Low enough that the flood is over it within its first half second: what is measured is the
# cost of refusing, not of the turns the flood was allowed.
TENANT_RATE_PER_MINUTE = 120
VICTIM_CONNECTIONS = 2
VICTIM_INTERVAL = 0.2  # each victim connection chats 5 times a second: well under the limit in both phases


def _chat(tenant: str, in_query: bool) -> RequestFactory:
    path = f"{CHAT}?tenant_id={tenant}" if in_query else CHAT

    def build(conn: int, n: int) -> bytes:
        body: dict[str, Any] = {"session_id": f"{tenant}-{conn}-{n}", "message": "hi"}
        if not in_query:
            body["tenant_id"] = tenant
        return json_post(path, body)

    return build


async def _victim(port: int, seconds: float, tenant: str) -> LoadResult:
    return await closed_loop(port, _chat(tenant, in_query=False), connections=VICTIM_CONNECTIONS,
                             duration=seconds, max_requests=100_000, expect=Expect(contains=b'"message_count"'),
                             interval=VICTIM_INTERVAL)


async def _flood(port: int, seconds: float, in_query: bool) -> LoadResult:
    return await closed_loop(port, _chat("noisy", in_query=in_query), connections=FLOOD_CONNECTIONS, duration=seconds,
                             max_requests=int(FLOOD_RATE * seconds * 2), expect=Expect(contains=b'"message_count"'),
                             interval=FLOOD_CONNECTIONS / FLOOD_RATE)


async def _flooded(port: int, seconds: float, in_query: bool, victim_tenant: str) -> tuple[LoadResult, dict[str, Any]]:
    """The flood runs in its own process, so its client work is not measured as the service's."""
    flood = await asyncio.create_subprocess_exec(sys.executable, "-m", "benchmarks.noisy", str(port),
                                                 str(seconds + 1.0), "query" if in_query else "body", cwd=ROOT,
                                                 stdout=asyncio.subprocess.PIPE)
    try:
        await asyncio.sleep(0.5)  # the flood is under way first
        victim = await _victim(port, seconds, victim_tenant)
    finally:
        out, _ = await asyncio.wait_for(flood.communicate(), seconds + 30)
    return victim, json.loads(out)


async def noisy_tenant(cfg: BenchConfig, cores: frozenset[int] | None, collector: Collector) -> None:
    seconds = max(2.0, cfg.phase_seconds / 2)
    print(f"Scenario: noisy tenant ({FLOOD_CONNECTIONS} connections, ~{FLOOD_RATE} chats/s, tenant limit "
          f"{TENANT_RATE_PER_MINUTE}/min) vs {VICTIM_CONNECTIONS} victim connections", flush=True)
    server = await ServerProcess.start("service-noisy", "--app", "service", "--tokens", str(cfg.tokens),
                                       "--tenant-rate-per-minute", str(TENANT_RATE_PER_MINUTE), cores=cores)
    try:
        async with Sampler(server) as sampler:
            alone = await _victim(server.port, seconds, "victim-alone")
            victim, flood = await _flooded(server.port, seconds, True, "victim-flooded")
            # The same flood naming its tenant only in the body: refused after decoding, for comparison.
            body_victim, body_flood = await _flooded(server.port, seconds, False, "victim-body-flood")
        summary = sampler.summary()
    finally:
        await server.stop()
    p50_alone, p50_flooded = alone.latency_ms()["p50"], victim.latency_ms()["p50"]
    refused = (flood.get("error_kinds") or {}).get("HTTP 429", 0)
    collector.scenarios["noisy_tenant"] = {
        "flood_connections": FLOOD_CONNECTIONS, "flood_rate_target": FLOOD_RATE,
        "tenant_rate_per_minute": TENANT_RATE_PER_MINUTE, "victim_alone": alone.summary(),
        "victim_flooded": victim.summary(), "flood": {**flood, "refused_429": refused},
        "p50_ratio": ratio(p50_flooded, p50_alone), "server": summary,
        "tenant_in_body": {"victim_flooded": body_victim.summary(), "flood": body_flood,
                           "p50_ratio": ratio(body_victim.latency_ms()["p50"], p50_alone)},
    }
    sent = flood.get("completed", 0) + flood.get("errors", 0)
    print(f"    victim p50 {p50_alone} ms alone, {p50_flooded} ms under the flood; flood {sent} requests, "
          f"{refused} refused", flush=True)
    collector.target("11.noisy_tenant_p50", "victim p50 under another tenant's request flood / unloaded p50",
                     ratio(p50_flooded, p50_alone), "<=", 2.0, "x")
    collector.target("11.noisy_victim_errors", "victim errors under the request flood", victim.error_count, "==", 0)
    collector.report("11.noisy_tenant_in_body", "the same with the flood naming its tenant only in the body (refused "
                     "after decoding)", ratio(body_victim.latency_ms()["p50"], p50_alone), "x")


if __name__ == "__main__":  # the flood: python -m benchmarks.noisy PORT SECONDS query|body
    print(json.dumps(asyncio.run(_flood(int(sys.argv[1]), float(sys.argv[2]), sys.argv[3] == "query")).summary()),
          flush=True)
