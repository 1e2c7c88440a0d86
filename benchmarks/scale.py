"""Phases at scale: many open streams and active turns (3), many sessions (4)."""

from __future__ import annotations

import asyncio
from typing import Any

from benchmarks.collect import Collector, ratio
from benchmarks.config import BenchConfig
from benchmarks.httpwire import request_bytes
from benchmarks.launcher import SEED_TENANT
from benchmarks.load import (
    CHAT,
    STREAM,
    STREAM_DONE,
    Expect,
    RequestFactory,
    StreamBurst,
    chat_factory,
    closed_loop,
)
from benchmarks.servers import Sampler, ServerProcess, Usage
from benchmarks.stats import LoadResult
from benchmarks.system import raise_nofile

FD_MARGIN = 512  # descriptors a process needs besides its sockets


async def _hold_open(server: ServerProcess, burst: StreamBurst) -> tuple[LoadResult, Usage | None, int]:
    """Run the burst; once every stream is open, sample the server. Returns (result, usage, open then)."""
    task = asyncio.create_task(burst.run(), name=f"bench:burst:{server.label}")
    waiter = asyncio.create_task(burst.all_open.wait(), name=f"bench:all-open:{server.label}")
    held: Usage | None = None
    open_then = 0
    try:
        await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        if waiter.done() and not task.done():
            await asyncio.sleep(0.5)  # let the last turns allocate what they hold
            open_then = burst.open_now
            held = server.usage()
    finally:
        waiter.cancel()
        await asyncio.gather(waiter, return_exceptions=True)
        result = await task
    return result, held, open_then


async def _streams_on(label: str, args: list[str], count: int, cfg: BenchConfig, cores: frozenset[int] | None,
                      collector: Collector) -> dict[str, Any]:
    server = await ServerProcess.start(label, *args, cores=cores)
    try:
        await closed_loop(server.port, lambda c, n: request_bytes("GET", "/health"), connections=1,
                          duration=0.5, max_requests=20)
        idle = server.usage()
        seconds = cfg.stream_tokens * cfg.stream_delay
        burst = StreamBurst(server.port, chat_factory(STREAM, "s3", 1), count, expect=Expect(contains=STREAM_DONE),
                            open_concurrency=cfg.open_concurrency, timeout=2 * seconds + 120)
        async with Sampler(server) as sampler:
            result, held, open_then = await _hold_open(server, burst)
        collector.curve(f"streams/{label}", sampler.curve(sampler.samples[0].at))
        out = result.summary()
        out["server"] = sampler.summary()
        out["server"]["nofile"] = server.nofile
        out["rss_idle_mib"] = round(idle.rss / 2**20, 2)
        out["open_when_sampled"] = open_then
        if held is not None and open_then:
            out["rss_all_open_mib"] = round(held.rss / 2**20, 2)
            out["rss_per_open_stream_kib"] = round((held.rss - idle.rss) / open_then / 1024, 2)
        print(f"    {label}: {result.completed}/{count} complete, peak open {result.peak_open}, "
              f"{out.get('rss_per_open_stream_kib')} KiB per open stream, errors {result.error_count}", flush=True)
        return out
    finally:
        await server.stop()


async def concurrency(cfg: BenchConfig, cores: frozenset[int] | None, collector: Collector) -> None:
    """Scenario 3: N slow streams open at once on each server; then 1,000 active turns."""
    count = cfg.streams
    nofile = raise_nofile()
    if nofile < count + FD_MARGIN:
        count = max(100, nofile - FD_MARGIN)
        collector.note(f"open-files limit is {nofile}: scenario 3 scaled down from {cfg.streams} to {count} streams")
    print(f"Scenario 3: {count} concurrent streams (a token every {cfg.stream_delay:g}s)", flush=True)
    common = ["--tokens", str(cfg.stream_tokens), "--delay", str(cfg.stream_delay)]
    ref = await _streams_on("reference", ["--app", "reference", *common], count, cfg, cores, collector)
    svc = await _streams_on("service", ["--app", "service", "--max-concurrent-turns", str(count), *common],
                            count, cfg, cores, collector)
    active = await _active_turns(cfg, cores, collector)
    collector.scenarios["3_concurrency"] = {
        "streams": count, "requested_streams": cfg.streams, "tokens": cfg.stream_tokens,
        "token_delay_s": cfg.stream_delay, "service_max_concurrent_turns": count,
        "reference": ref, "service": svc,
        "ratio": {"rss_per_open_stream": ratio(svc.get("rss_per_open_stream_kib"), ref.get("rss_per_open_stream_kib"))},
        "active_turns": active,
    }
    collector.target("3.streams_open", f"service streams open at once (of {count})", svc.get("peak_open", 0),
                     ">=", count)
    collector.target("3.streams_done", "service streams completed with their done event", svc["completed"], ">=", count)
    collector.target("3.rss_per_stream", "RSS per open stream, service / reference",
                     collector.scenarios["3_concurrency"]["ratio"]["rss_per_open_stream"], "<=", 1.5, "x")
    collector.target("3.active_turns", f"concurrent active turns completed without error (of {cfg.active_turns})",
                     active["completed"] if active["errors"] == 0 else 0, ">=", cfg.active_turns)


async def _active_turns(cfg: BenchConfig, cores: frozenset[int] | None, collector: Collector) -> dict[str, Any]:
    """Half streaming, half JSON, all sent at once to a model taking ~1 s per answer."""
    total = cfg.active_turns
    print(f"  {total} concurrent active turns ({cfg.active_tokens} tokens, {cfg.active_delay:g}s apart)", flush=True)
    server = await ServerProcess.start("service-active", "--app", "service", "--tokens", str(cfg.active_tokens),
                                       "--delay", str(cfg.active_delay), "--max-concurrent-turns", str(total),
                                       cores=cores)
    try:
        half = total // 2
        streams = StreamBurst(server.port, chat_factory(STREAM, "act-s", 1), half, expect=Expect(contains=STREAM_DONE),
                              open_concurrency=half, timeout=120)
        answers = StreamBurst(server.port, chat_factory(CHAT, "act-j", 1), total - half,
                              expect=Expect(contains=b'"message_count"'), open_concurrency=total - half, timeout=120)
        async with Sampler(server) as sampler:
            loads = await asyncio.gather(streams.run(), answers.run())
        merged = LoadResult.merge(loads)
        wall = max(x.duration for x in loads)
        turn_seconds = cfg.active_tokens * cfg.active_delay
        out = {"turns": total, "completed": merged.completed, "errors": merged.error_count,
               "error_kinds": dict(merged.errors), "wall_s": round(wall, 3), "model_turn_s": turn_seconds,
               "latency_ms": merged.latency_ms(),
               # The sum of turn times over the wall time: ~N when all N ran at once.
               "effective_concurrency": round(sum(merged.latencies) / wall, 1) if wall else None,
               "server": sampler.summary(), "service_max_concurrent_turns": total}
        print(f"    {merged.completed}/{total} complete in {wall:.2f}s, errors {merged.error_count}, "
              f"effective concurrency {out['effective_concurrency']}", flush=True)
        return out
    finally:
        await server.stop()


def _paths(template: str, count: int, stride: int = 7919) -> RequestFactory:
    """GETs of ``template.format(i)`` for ids spread over ``count`` sessions."""

    def build(conn: int, n: int) -> bytes:
        return request_bytes("GET", template.format((n * stride + conn * 104_729) % count))

    return build


async def sessions(cfg: BenchConfig, cores: frozenset[int] | None, collector: Collector) -> None:
    """Scenario 4: pre-filled sessions; history, list at three offsets and delete over HTTP."""
    n = cfg.sessions
    print(f"Scenario 4: {n} sessions x {cfg.session_messages} messages", flush=True)
    server = await ServerProcess.start("service-sessions", "--app", "service", "--seed-sessions", str(n),
                                       "--seed-messages", str(cfg.session_messages), cores=cores)
    try:
        seeded = server.events["seeded"]
        growth = seeded["rss_after"] - seeded["rss_before"]
        per_session = (growth - seeded["text_bytes"]) / n
        tenant = f"tenant_id={SEED_TENANT}"
        async with Sampler(server) as sampler:
            history = await closed_loop(server.port, _paths(f"/api/v1/sessions/seed-{{:07d}}/history?{tenant}", n),
                                        connections=1, duration=cfg.lookup_seconds, max_requests=cfg.history_requests,
                                        expect=Expect(contains=b'"messages"'))
            pages: dict[str, LoadResult] = {}
            for name, offset in (("start", 0), ("middle", n // 2), ("end", max(0, n - 50))):
                path = request_bytes("GET", f"/api/v1/sessions?{tenant}&limit=50&offset={offset}")
                pages[name] = await closed_loop(server.port, lambda c, i, p=path: p, connections=1,
                                                duration=cfg.lookup_seconds, max_requests=cfg.list_requests,
                                                expect=Expect(contains=b'"session_id"'))
            deletes: dict[str, LoadResult] = {}
            k = min(cfg.deletes_per_position, n // 3)
            for name, first, step in (("newest", n - 1, -1), ("middle", n // 2, 1), ("oldest", 0, 1)):
                deletes[name] = await closed_loop(
                    server.port,
                    lambda c, i, f=first, s=step: request_bytes(
                        "DELETE", f"/api/v1/sessions/seed-{f + s * i:07d}?{tenant}"),
                    connections=1, duration=3 * cfg.lookup_seconds, max_requests=k,
                    expect=Expect(contains=b'"messages_deleted"'))
        collector.curve("sessions/service", sampler.curve(collector.started))
    finally:
        await server.stop()
    delete_p50 = [d.latency_ms()["p50"] for d in deletes.values()]
    spread = (max(delete_p50) / min(delete_p50)) if all(delete_p50) else None
    worst_list_p99 = max((p.latency_ms()["p99"] or float("inf")) for p in pages.values())
    collector.scenarios["4_sessions"] = {
        "seeded": seeded, "rss_growth_mib": round(growth / 2**20, 2),
        "rss_per_session_beyond_text_bytes": round(per_session, 1),
        "history": history.summary(),
        "list_limit_50": {name: {"offset": off, **pages[name].summary()}
                          for name, off in (("start", 0), ("middle", n // 2), ("end", max(0, n - 50)))},
        "delete": {name: d.summary() for name, d in deletes.items()},
        "delete_p50_spread": spread and round(spread, 3),
        "server": sampler.summary(),
    }
    collector.target("4.rss_per_session", "RSS per session beyond its message text", per_session, "<=", 4096, "B")
    # No reference serves sessions, so these absolute times are reported, not judged.
    collector.report("4.history_p99", "history fetch p99", history.latency_ms()["p99"], "ms")
    collector.report("4.list_p99", "list limit=50 p99, worst of offsets 0 / middle / end", worst_list_p99, "ms")
    collector.target("4.delete_o1", "delete p50, slowest / fastest of newest / middle / oldest", spread, "<=", 1.5, "x")
    collector.target("4.errors", "history/list/delete errors",
                     history.error_count + sum(p.error_count for p in pages.values())
                     + sum(d.error_count for d in deletes.values()), "==", 0)
