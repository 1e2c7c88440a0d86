"""Scenario 6: the token relay through the real openai client, next to a lean aiohttp relay.

One instant OpenAI-compatible upstream (its own process, on the load generator's cores) feeds
three servers on the server core: the lean relay (``relay.py``), and the service with
``LLM_PROVIDER=openai`` speaking Chat Completions and then the Responses API to it. All three
stream the same K-token answers to the same closed-loop load; the service's completed streams/s
are compared with the relay's, and its time to first token on one connection with the relay's.
"""

from __future__ import annotations

from benchmarks.collect import Collector, ratio
from benchmarks.config import BenchConfig
from benchmarks.load import STREAM, STREAM_DONE, Expect, chat_factory, closed_loop
from benchmarks.servers import ServerProcess
from benchmarks.stats import LoadResult
from benchmarks.system import CpuPlan
from benchmarks.traffic import _alternate, _side

APIS = ("chat", "responses")


async def relay(cfg: BenchConfig, plan: CpuPlan, collector: Collector) -> None:
    print(f"Scenario 6: token relay through the real openai client, {cfg.relay_tokens}-token answers", flush=True)
    tokens = ["--tokens", str(cfg.relay_tokens)]
    upstream = await ServerProcess.start("upstream", "--app", "upstream", *tokens, cores=plan.client)
    servers: list[ServerProcess] = []
    try:
        url = f"http://127.0.0.1:{upstream.port}"
        servers.append(await ServerProcess.start("relay", "--app", "relay", "--upstream", url, cores=plan.server))
        for api in APIS:
            servers.append(await ServerProcess.start(f"service-{api}", "--app", "service", "--upstream", url,
                                                     "--llm-api", api, *tokens, cores=plan.server))
        await _measure(cfg, servers, collector)
    finally:
        for server in servers:
            await server.stop()
        await upstream.stop()


async def _measure(cfg: BenchConfig, servers: list[ServerProcess], collector: Collector) -> None:
    expect = Expect(contains=STREAM_DONE)
    for server in servers:
        await closed_loop(server.port, chat_factory(STREAM, "warm6", cfg.session_every), connections=cfg.connections,
                          duration=cfg.warmup_seconds, max_requests=cfg.max_requests, expect=expect)

    async def make(server: ServerProcess, round_no: int, seconds: float) -> tuple[LoadResult, None]:
        factory = chat_factory(STREAM, f"s6r{round_no}", cfg.session_every)
        return await closed_loop(server.port, factory, connections=cfg.connections, duration=seconds,
                                 max_requests=cfg.max_requests, expect=expect), None

    runs = await _alternate(cfg, servers, "relay", collector, make)
    quiet: dict[str, LoadResult] = {}
    for server in servers:
        quiet[server.label] = await closed_loop(
            server.port, chat_factory(STREAM, "ttft6", cfg.session_every), connections=1,
            duration=cfg.ttft_seconds, max_requests=cfg.ttft_max_streams, expect=expect)
    lean = servers[0].label
    lean_load, lean_samplers, _ = runs[lean]
    lean_ttft = quiet[lean].first_data_ms()["p50"]
    scenario: dict[str, object] = {
        "connections": cfg.connections, "tokens": cfg.relay_tokens,
        "reference": _side(lean_load, lean_samplers) | {"label": "lean aiohttp relay"},
        "ttft_one_connection_ms": {label: q.first_data_ms() for label, q in quiet.items()},
    }
    for api in APIS:
        label = f"service-{api}"
        load, samplers, _ = runs[label]
        side = _side(load, samplers)
        svc_ttft = quiet[label].first_data_ms()["p50"]
        added = None if svc_ttft is None or lean_ttft is None else round(svc_ttft - lean_ttft, 3)
        scenario[api] = {
            "service": side,
            "ratio": {"rate": ratio(load.rate, lean_load.rate),
                      "p99": ratio(side["latency_ms"]["p99"], scenario["reference"]["latency_ms"]["p99"]),  # type: ignore[index]
                      "cpu_ms_per_request": ratio(side["server"]["cpu_ms_per_request"],
                                                  scenario["reference"]["server"]["cpu_ms_per_request"])},  # type: ignore[index]
            "added_ttft_p50_ms": added,
        }
        collector.target(f"6.rate_{api}", f"relayed streams/s, service (LLM_API={api}) / lean relay",
                         ratio(load.rate, lean_load.rate), ">=", 0.5, "x")
        collector.target(f"6.ttft_{api}", f"added time to first token p50 over the lean relay (LLM_API={api})",
                         added, "<=", 1.0, "ms")
        collector.target(f"6.errors_{api}", f"relay errors (service, LLM_API={api})", load.error_count, "==", 0)
    collector.scenarios["6_relay"] = scenario
