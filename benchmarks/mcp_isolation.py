"""Scenario 14: a tenant whose own MCP server hangs costs other tenants nothing (issue 25, item 6).

One service process (the offline assistant). Tenant ``stuck`` has a profile naming an MCP server
that accepts connections and never answers (a listener in the runner's process); tenant
``victim`` has a profile too, with no server of its own. The victim chats on four connections at
a steady pace alone, then while the stuck tenant chats on two: its turns wait for their server
(up to MCP_CONNECT_TIMEOUT_SECONDS), until the server's breaker opens and they go on without its
tools. Alone and loaded alternate, ``rounds`` times. Target: the victim's p99 while
the stuck tenant runs is at most 1.2 times its p99 alone.
"""

from __future__ import annotations

import asyncio
import json

import aiohttp

from benchmarks.collect import Collector, ratio
from benchmarks.config import BenchConfig
from benchmarks.httpwire import json_post
from benchmarks.load import CHAT, MESSAGE, Expect, RequestFactory, closed_loop
from benchmarks.servers import ServerProcess
from benchmarks.stats import LoadResult

VICTIM = (4, 0.05)  # connections, seconds between a connection's chats: about 80 chats a second
STUCK = (2, 0.1)
LIMIT = 1.2


def _factory(tenant: str, tag: str) -> RequestFactory:
    def build(conn: int, n: int) -> bytes:
        return json_post(CHAT, {"session_id": f"{tag}-{conn}-{n}", "message": MESSAGE, "tenant_id": tenant})

    return build


async def _chats(port: int, tenant: str, tag: str, seconds: float) -> LoadResult:
    connections, interval = STUCK if tenant == "stuck" else VICTIM
    return await closed_loop(port, _factory(tenant, tag), connections=connections, duration=seconds,
                             max_requests=100_000, expect=Expect(contains=b'"profile_version"'), interval=interval)


async def _swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while await reader.read(65536):
            pass
    finally:
        writer.close()


async def _profiles(port: int, hanging_url: str) -> None:
    async with aiohttp.ClientSession() as http:
        for tenant, profile in (("stuck", {"mcp_servers": [{"name": "stuck", "url": hanging_url}]}),
                                ("victim", {"instructions": "Be brief."})):
            async with http.put(f"http://127.0.0.1:{port}/api/v1/agent-profile?tenant_id={tenant}",
                                json=profile) as resp:
                if resp.status != 200:
                    raise RuntimeError(f"PUT agent-profile for {tenant}: {resp.status} {await resp.text()}")


async def mcp_isolation(cfg: BenchConfig, cores: frozenset[int] | None, collector: Collector) -> None:
    print("Scenario 14: a tenant's hanging MCP server beside another tenant's chats", flush=True)
    hanging = await asyncio.start_server(_swallow, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{hanging.sockets[0].getsockname()[1]}/mcp"
    svc = await ServerProcess.start("service-mcp-isolation", "--app", "service", "--tokens", str(cfg.tokens),
                                    cores=cores)
    alone: list[LoadResult] = []
    loaded: list[LoadResult] = []
    stuck: list[LoadResult] = []
    try:
        await _profiles(svc.port, url)
        # The first use of a tenant MCP server in a process imports the MCP SDK (in a worker
        # thread, about a second): once per process, so it is part of the warm-up, not the rounds.
        await asyncio.gather(_chats(svc.port, "victim", "warm14", cfg.warmup_seconds),
                             _chats(svc.port, "stuck", "warm14s", cfg.warmup_seconds))
        per_round = cfg.phase_seconds / cfg.rounds
        for round_no in range(cfg.rounds):
            svc.check_alive()
            alone.append(await _chats(svc.port, "victim", f"s14a{round_no}", per_round))
            victim, other = await asyncio.gather(_chats(svc.port, "victim", f"s14l{round_no}", per_round),
                                                 _chats(svc.port, "stuck", f"s14s{round_no}", per_round))
            loaded.append(victim)
            stuck.append(other)
            print(f"    mcp isolation round {round_no + 1}: victim p99 alone {alone[-1].latency_ms()['p99']} ms, "
                  f"beside the stuck tenant {victim.latency_ms()['p99']} ms "
                  f"(stuck tenant: {other.completed} chats, p99 {other.latency_ms()['p99']} ms)", flush=True)
    finally:
        await svc.stop()
        hanging.close()
        await hanging.wait_closed()
    quiet, busy, blocked = LoadResult.merge(alone), LoadResult.merge(loaded), LoadResult.merge(stuck)
    p99 = ratio(busy.latency_ms()["p99"], quiet.latency_ms()["p99"])
    collector.scenarios["14_mcp_isolation"] = {
        "victim_connections_interval": VICTIM, "stuck_connections_interval": STUCK,
        "victim_alone": quiet.summary(), "victim_beside_stuck": busy.summary(), "stuck": blocked.summary(),
        "ratio": {"p99": p99, "p50": ratio(busy.latency_ms()["p50"], quiet.latency_ms()["p50"])},
        "stuck_errors": json.loads(json.dumps(dict(blocked.errors))),
    }
    collector.target("14.victim_p99", "victim's chat p99 beside a tenant whose MCP server hangs / alone", p99, "<=",
                     LIMIT, "x")
    collector.target("14.victim_errors", "victim's failed chats", quiet.error_count + busy.error_count, "==", 0)
