"""Scenario 13: what applying a tenant's agent profile costs a chat turn (issue 25).

One service process (the offline assistant, as scenario 1), two tenants: ``plain`` has no profile
(the service's defaults, version 0), ``profiled`` has one with instructions, a tool allow-list, its
own approval rule and model settings. Scenario 1's chat load runs against each tenant in short
slices, alternating (and alternating which goes first), so drifting background load hits both;
the target is the median over adjacent pairs of slices of their request-rate ratio (profiled /
plain, at least 0.95: within 5%). The server's CPU per request, both ways, is reported beside it.
Every profiled turn reads the profile store (the SQLite API keys file beside the memory session
store, as deployed), filters the tools and builds its system message; what it derives is cached
per (tenant, version).
"""

from __future__ import annotations

import statistics

import aiohttp

from benchmarks.collect import Collector, ratio
from benchmarks.config import BenchConfig
from benchmarks.httpwire import json_post
from benchmarks.load import CHAT, MESSAGE, RequestFactory, closed_loop
from benchmarks.servers import ServerProcess
from benchmarks.stats import LoadResult

TENANTS = ("plain", "profiled")
PROFILE = {
    "instructions": "You are the Bench Co. assistant. Answer briefly and never promise refunds.",
    "tools": {"allow": ["*order*", "send_email"], "deny": ["create_order"]},
    "approval": ["update_order_status"],
    "model": {"temperature": 0.2, "max_output_tokens": 400},
    "handoff": {"enabled": True, "timeout_seconds": 600},
}


def _factory(tenant: str, tag: str, every: int) -> RequestFactory:
    def build(conn: int, n: int) -> bytes:
        return json_post(CHAT, {"session_id": f"{tag}-{conn}-{n // every}", "message": MESSAGE, "tenant_id": tenant})

    return build


async def _put_profile(port: int) -> int:
    async with aiohttp.ClientSession() as http:
        url = f"http://127.0.0.1:{port}/api/v1/agent-profile?tenant_id=profiled"
        async with http.put(url, json=PROFILE) as resp:
            if resp.status != 200:
                raise RuntimeError(f"PUT agent-profile answered {resp.status}: {await resp.text()}")
            version: int = (await resp.json())["version"]
        async with http.post("http://127.0.0.1:" + str(port) + "/api/v1/chat",
                             json={"session_id": "check", "message": MESSAGE, "tenant_id": "profiled"}) as resp:
            body = await resp.json()
            if body.get("profile_version") != version:
                raise RuntimeError(f"the profiled tenant's turn did not use its profile: {body}")
    return version


SLICES = 4  # per round and tenant: short alternating slices, compared pairwise


async def _slice(svc: ServerProcess, tenant: str, tag: str, cfg: BenchConfig, seconds: float) -> tuple[LoadResult,
                                                                                                        float]:
    """One load slice against ``tenant``: its result and the server's CPU seconds it took."""
    svc.check_alive()
    before = svc.usage().cpu
    load = await closed_loop(svc.port, _factory(tenant, tag, cfg.session_every), connections=cfg.connections,
                             duration=seconds, max_requests=cfg.max_requests)
    return load, svc.usage().cpu - before


async def profile_chat(cfg: BenchConfig, cores: frozenset[int] | None, collector: Collector) -> None:
    print("Scenario 13: chat with a tenant profile vs without, one process", flush=True)
    svc = await ServerProcess.start("service-profiles", "--app", "service", "--tokens", str(cfg.tokens), cores=cores)
    loads: dict[str, list[LoadResult]] = {t: [] for t in TENANTS}
    cpu: dict[str, float] = dict.fromkeys(TENANTS, 0.0)
    pair_ratios: list[float] = []
    try:
        version = await _put_profile(svc.port)
        for tenant in TENANTS:
            await closed_loop(svc.port, _factory(tenant, f"warm13{tenant}", cfg.session_every),
                              connections=cfg.connections, duration=cfg.warmup_seconds, max_requests=cfg.max_requests)
        slices = cfg.rounds * SLICES
        per_slice = cfg.phase_seconds / slices
        for n in range(slices):  # plain, profiled; then profiled, plain: neither always goes first
            order = TENANTS if n % 2 == 0 else tuple(reversed(TENANTS))
            rates: dict[str, float] = {}
            for tenant in order:
                load, seconds = await _slice(svc, tenant, f"s13r{n}{tenant}", cfg, per_slice)
                loads[tenant].append(load)
                cpu[tenant] += seconds
                rates[tenant] = load.rate
            if rates["plain"] > 0:
                pair_ratios.append(rates["profiled"] / rates["plain"])
            print(f"    profiles slice {n + 1}/{slices}: plain {rates['plain']:,.0f}/s, "
                  f"profiled {rates['profiled']:,.0f}/s", flush=True)
    finally:
        await svc.stop()
    plain, profiled = (LoadResult.merge(loads[t]) for t in TENANTS)
    cpu_ms = {t: 1000 * cpu[t] / max(1, sum(x.completed for x in loads[t])) for t in TENANTS}
    rate = round(statistics.median(pair_ratios), 4) if pair_ratios else None
    collector.scenarios["13_profile_chat"] = {
        "profile": PROFILE, "profile_version": version, "connections": cfg.connections, "slices": len(pair_ratios),
        "plain": {"rate": round(plain.rate, 1), "latency_ms": plain.latency_ms(), "errors": plain.error_count,
                  "server_cpu_ms_per_request": round(cpu_ms["plain"], 4)},
        "profiled": {"rate": round(profiled.rate, 1), "latency_ms": profiled.latency_ms(),
                     "errors": profiled.error_count, "server_cpu_ms_per_request": round(cpu_ms["profiled"], 4)},
        "ratio": {"rate_median_of_pairs": rate, "rate_overall": ratio(profiled.rate, plain.rate),
                  "pairs": [round(r, 4) for r in pair_ratios],
                  "p99": ratio(profiled.latency_ms()["p99"], plain.latency_ms()["p99"]),
                  "server_cpu_ms_per_request": ratio(cpu_ms["profiled"], cpu_ms["plain"])},
    }
    collector.target("13.chat_ratio", "chat req/s with a tenant profile / without (median of adjacent slices)",
                     rate, ">=", 0.95, "x")
    collector.report("13.cpu_ratio", "server CPU per chat request with a profile / without",
                     ratio(cpu_ms["profiled"], cpu_ms["plain"]), "x")
    collector.target("13.errors", "failed requests, both tenants", plain.error_count + profiled.error_count,
                     "==", 0)
