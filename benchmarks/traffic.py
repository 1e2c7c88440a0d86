"""Phases with steady traffic: chat (1), health under that load (5), streaming (2), start-up (5)."""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import tempfile
import time
from typing import Any

from benchmarks.collect import Collector, ratio
from benchmarks.config import BenchConfig
from benchmarks.httpwire import request_bytes
from benchmarks.load import CHAT, STREAM, STREAM_DONE, Expect, chat_factory, closed_loop
from benchmarks.servers import Sampler, ServerProcess
from benchmarks.stats import LoadResult
from benchmarks.system import free_port, pin


def _server_usage(samplers: list[Sampler]) -> dict[str, Any]:
    """CPU and RSS over several rounds of one server."""
    cpu = sum(s.samples[-1].cpu - s.samples[0].cpu for s in samplers)
    wall = sum(s.samples[-1].at - s.samples[0].at for s in samplers)
    peak = max(x.rss for s in samplers for x in s.samples)
    return {"cpu_cores": round(cpu / max(wall, 1e-9), 3), "rss_peak_mib": round(peak / 2**20, 2)}


def _side(load: LoadResult, samplers: list[Sampler]) -> dict[str, Any]:
    out = load.summary()
    out["server"] = _server_usage(samplers)
    # CPU per request is steadier than req/s when other processes share the machine.
    cpu_seconds = sum(s.samples[-1].cpu - s.samples[0].cpu for s in samplers)
    out["server"]["cpu_ms_per_request"] = round(cpu_seconds * 1000 / load.completed, 4) if load.completed else None
    return out


async def _alternate(cfg: BenchConfig, servers: list[ServerProcess], phase: str, collector: Collector,
                     make: Any) -> dict[str, tuple[LoadResult, list[Sampler], list[LoadResult]]]:
    """Run ``make(server, round)`` -> (main load, probe load) on each server in turn, ``cfg.rounds`` times."""
    per_round = cfg.phase_seconds / cfg.rounds
    parts: dict[str, tuple[list[LoadResult], list[Sampler], list[LoadResult]]] = {
        s.label: ([], [], []) for s in servers}
    client = {s.label: 0.0 for s in servers}
    for round_no in range(cfg.rounds):
        for server in servers:
            server.check_alive()
            client_cpu = time.process_time()
            async with Sampler(server) as sampler:
                main, probe = await make(server, round_no, per_round)
            client[server.label] += time.process_time() - client_cpu
            loads, samplers, probes = parts[server.label]
            loads.append(main)
            samplers.append(sampler)
            if probe is not None:
                probes.append(probe)
            collector.curve(f"{phase}/{server.label}/round{round_no}", sampler.curve(collector.started))
            print(f"    {phase} {server.label} round {round_no + 1}: {main.rate:,.0f}/s, "
                  f"p99 {main.latency_ms()['p99']} ms, errors {main.error_count}", flush=True)
    for label, (_loads, samplers, _) in parts.items():
        # The load generator's own CPU use (1.0 = a core): well below 1, it is not the bottleneck.
        collector.scenarios.setdefault("load_generator_cpu_cores", {})[f"{phase}/{label}"] = round(
            client[label] / max(sum(s.samples[-1].at - s.samples[0].at for s in samplers), 1e-9), 3)
    return {label: (LoadResult.merge(loads), samplers, probes) for label, (loads, samplers, probes) in parts.items()}


async def chat_and_health(cfg: BenchConfig, ref: ServerProcess, svc: ServerProcess, collector: Collector) -> None:
    """Scenario 1 (non-streaming chat) with scenario 5's health probe running alongside."""
    print("Scenario 1: non-streaming chat; scenario 5: health under that load", flush=True)
    health = request_bytes("GET", "/health")
    for server in (ref, svc):
        await closed_loop(server.port, chat_factory(CHAT, "warm", cfg.session_every), connections=cfg.connections,
                          duration=cfg.warmup_seconds, max_requests=cfg.max_requests)

    async def make(server: ServerProcess, round_no: int, seconds: float) -> tuple[LoadResult, LoadResult]:
        factory = chat_factory(CHAT, f"s1r{round_no}", cfg.session_every)
        return await asyncio.gather(
            closed_loop(server.port, factory, connections=cfg.connections, duration=seconds,
                        max_requests=cfg.max_requests),
            closed_loop(server.port, lambda c, n: health, connections=1, duration=seconds,
                        max_requests=cfg.max_requests, interval=cfg.health_interval),
        )

    runs = await _alternate(cfg, [ref, svc], "chat", collector, make)
    (ref_load, ref_samplers, ref_probes), (svc_load, svc_samplers, svc_probes) = runs[ref.label], runs[svc.label]
    ref_side, svc_side = _side(ref_load, ref_samplers), _side(svc_load, svc_samplers)
    collector.scenarios["1_chat"] = {
        "connections": cfg.connections, "tokens": cfg.tokens, "new_session_every": cfg.session_every,
        "reference": ref_side, "service": svc_side,
        "ratio": {"rate": ratio(svc_load.rate, ref_load.rate),
                  "p99": ratio(svc_side["latency_ms"]["p99"], ref_side["latency_ms"]["p99"]),
                  "cpu_ms_per_request": ratio(svc_side["server"]["cpu_ms_per_request"],
                                              ref_side["server"]["cpu_ms_per_request"])},
    }
    ref_health, svc_health = LoadResult.merge(ref_probes), LoadResult.merge(svc_probes)
    collector.scenarios["5_health_under_load"] = {
        "probe_interval_ms": cfg.health_interval * 1000,
        "reference": ref_health.summary(), "service": svc_health.summary(),
    }
    chat = collector.scenarios["1_chat"]
    collector.target("1.rate", "chat req/s, service / reference", chat["ratio"]["rate"], ">=", 0.5, "x")
    collector.target("1.p99", "chat p99 latency, service / reference", chat["ratio"]["p99"], "<=", 3.0, "x")
    collector.target("1.errors", "chat errors (service)", svc_load.error_count, "==", 0)
    health_p99 = ratio(svc_health.latency_ms()["p99"], ref_health.latency_ms()["p99"])
    collector.scenarios["5_health_under_load"]["ratio"] = {"p99": health_p99}
    collector.target("5.health_p99", "GET /health p99 under scenario 1 load, service / reference", health_p99,
                     "<=", 3.0, "x")


async def streaming(cfg: BenchConfig, ref: ServerProcess, svc: ServerProcess, collector: Collector) -> None:
    """Scenario 2: streamed answers under load, then time to first token without queueing."""
    print(f"Scenario 2: streaming chat, {cfg.tokens}-token answers", flush=True)
    expect = Expect(contains=STREAM_DONE)
    for server in (ref, svc):
        await closed_loop(server.port, chat_factory(STREAM, "warm2", cfg.session_every), connections=cfg.connections,
                          duration=cfg.warmup_seconds, max_requests=cfg.max_requests, expect=expect)

    async def make(server: ServerProcess, round_no: int, seconds: float) -> tuple[LoadResult, None]:
        factory = chat_factory(STREAM, f"s2r{round_no}", cfg.session_every)
        load = await closed_loop(server.port, factory, connections=cfg.connections, duration=seconds,
                                 max_requests=cfg.max_requests, expect=expect)
        return load, None

    runs = await _alternate(cfg, [ref, svc], "streaming", collector, make)
    (ref_load, ref_samplers, _), (svc_load, svc_samplers, _) = runs[ref.label], runs[svc.label]
    # Time to first token with one connection: no queueing, so what is left is the per-stream path.
    quiet: dict[str, LoadResult] = {}
    for server in (ref, svc):
        quiet[server.label] = await closed_loop(
            server.port, chat_factory(STREAM, "ttft", cfg.session_every), connections=1,
            duration=cfg.ttft_seconds, max_requests=cfg.ttft_max_streams, expect=expect)
    model_ttft_ms = 0.0  # the benchmark model yields its first token at once
    svc_quiet = quiet[svc.label].first_data_ms()["p50"]
    ref_side, svc_side = _side(ref_load, ref_samplers), _side(svc_load, svc_samplers)
    collector.scenarios["2_streaming"] = {
        "connections": cfg.connections, "tokens": cfg.tokens,
        "reference": ref_side, "service": svc_side,
        "ratio": {"rate": ratio(svc_load.rate, ref_load.rate),
                  "p99": ratio(svc_side["latency_ms"]["p99"], ref_side["latency_ms"]["p99"]),
                  "cpu_ms_per_request": ratio(svc_side["server"]["cpu_ms_per_request"],
                                              ref_side["server"]["cpu_ms_per_request"])},
        "ttft_one_connection_ms": {"reference": quiet[ref.label].first_data_ms(),
                                   "service": quiet[svc.label].first_data_ms(), "model": model_ttft_ms},
    }
    collector.target("2.rate", "completed streams/s, service / reference", ratio(svc_load.rate, ref_load.rate),
                     ">=", 0.5, "x")
    collector.target("2.ttft", "added time to first token p50 (service - model, one connection)",
                     None if svc_quiet is None else svc_quiet - model_ttft_ms, "<=", 1.0, "ms")
    collector.target("2.errors", "streaming errors (service)", svc_load.error_count, "==", 0)


def _clean_env(workdir: str, port: int) -> dict[str, str]:
    from msev15.config import VARIABLES

    env = {k: v for k, v in os.environ.items() if k not in {var.name for var in VARIABLES}}
    env.update({"SERVER_HOST": "127.0.0.1", "SERVER_PORT": str(port), "LLM_PROVIDER": "offline",
                "MCP_SERVER_URL": "", "LOG_TO_FILE": "false", "LOG_LEVEL": "WARNING", "ORDER_DB_SEED": "false",
                "ORDER_DB_PATH": f"{workdir}/orders.db", "EMAIL_OUTBOX_DIR": f"{workdir}/outbox",
                "EMAIL_ATTACHMENTS_DIR": f"{workdir}/attachments", "LOG_FILE_PATH": f"{workdir}/app.log"})
    return env


async def _status(port: int, path: str) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request_bytes("GET", path))
        parts = (await reader.readline()).split()
        if len(parts) < 2 or not parts[1].isdigit():
            raise ConnectionResetError("closed without a status line")
        return int(parts[1])
    finally:
        writer.close()
        await writer.wait_closed()


STARTUP_LIMIT = 20.0


async def _wait_healthy(proc: asyncio.subprocess.Process, port: int, started: float) -> float | None:
    """Seconds from ``started`` to the first 200 from /health; None if it died or took too long."""
    try:
        async with asyncio.timeout(STARTUP_LIMIT):
            while proc.returncode is None:
                try:
                    if await _status(port, "/health") == 200:
                        return time.perf_counter() - started
                except OSError:  # not listening yet
                    pass
                await asyncio.sleep(0.01)
    except TimeoutError:
        pass
    return None


async def startup(cfg: BenchConfig, cores: frozenset[int] | None, collector: Collector) -> None:
    """Scenario 5: from ``msev15 serve`` being started to the first 200 from /health."""
    print("Scenario 5: start-up to healthy (msev15 serve)", flush=True)
    times: list[float] = []
    for _ in range(cfg.startup_runs):
        with tempfile.TemporaryDirectory(prefix="msev15-bench-start-") as tmp:
            port = free_port()
            started = time.perf_counter()
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "msev15", "serve", cwd=tmp, env=_clean_env(tmp, port),
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
            try:
                pin(cores, proc.pid)
                healthy = await _wait_healthy(proc, port, started)
                if healthy is None:
                    collector.note(f"msev15 serve did not answer /health within {STARTUP_LIMIT:g}s "
                                   f"(exit code {proc.returncode})")
                else:
                    times.append(healthy)
            finally:
                if proc.returncode is None:
                    proc.terminate()
                await proc.wait()
    median = statistics.median(times) if times else None
    collector.scenarios["5_startup"] = {"runs_s": [round(t, 3) for t in times], "median_s": median and round(median, 3),
                                        "max_s": round(max(times), 3) if times else None,
                                        "command": "msev15 serve (offline model, no MCP)"}
    collector.target("5.startup", "start-up to healthy (median of runs)", median, "<=", 1.5, "s")
