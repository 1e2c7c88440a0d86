"""The benchmark suite's parts at a tiny scale: no timing thresholds, only that they work."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from benchmarks.collect import Collector, Target
from benchmarks.httpwire import ResponseParser, json_post, request_bytes
from benchmarks.load import (
    CHAT,
    STREAM,
    STREAM_DONE,
    Expect,
    StreamBurst,
    chat_factory,
    closed_loop,
)
from benchmarks.provider import BenchProvider, answer_tokens
from benchmarks.reference import create_reference_app
from benchmarks.report import render_markdown, write_results
from benchmarks.stats import LoadResult, percentile, summarize_ms
from msev15.agent.providers.base import ModelReply
from msev15.app import create_app
from tests.conftest import make_settings

TOKENS = 5


@pytest.fixture
async def reference(aiohttp_server: Any) -> Any:
    return await aiohttp_server(create_reference_app(TOKENS))


@pytest.fixture
async def service(aiohttp_server: Any, tmp_path: Path) -> Any:
    app = await create_app(make_settings(tmp_path, log_level="WARNING"), provider=BenchProvider(TOKENS))
    return await aiohttp_server(app)


# --- the model and the wire ------------------------------------------------------------------


async def test_bench_provider_streams_k_tokens_then_the_reply() -> None:
    provider = BenchProvider(4)
    items = [item async for item in provider.stream([{"role": "user", "content": "hi"}], [])]
    assert items[:4] == list(answer_tokens(4))
    reply = items[4]
    assert isinstance(reply, ModelReply) and reply.text == "".join(answer_tokens(4)) and reply.tool_calls == ()
    assert reply.usage == {"prompt_tokens": 1, "completion_tokens": 4}
    assert await provider.probe() == "healthy"


def test_bench_provider_rejects_a_negative_delay() -> None:
    with pytest.raises(ValueError, match="delay"):
        BenchProvider(3, delay=-1)


def test_answer_needs_a_token() -> None:
    with pytest.raises(ValueError, match="at least one token"):
        answer_tokens(0)


def test_reference_rejects_a_negative_delay() -> None:
    with pytest.raises(ValueError, match="delay"):
        create_reference_app(3, delay=-0.5)


def test_parser_reads_a_fixed_length_response_split_anywhere() -> None:
    raw = b"HTTP/1.1 201 Created\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\nhello"
    parser = ResponseParser(keep_body=True)
    assert not parser.feed(raw[:20], 1.0)
    assert not parser.feed(raw[20:-2], 2.0)
    assert parser.feed(raw[-2:], 3.0)
    assert (parser.status, bytes(parser.body), parser.first_data_at) == (201, b"hello", None)


def test_parser_reads_a_chunked_stream_and_times_its_first_chunk() -> None:
    raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n6\r\ndata: \r\n4;ext=1\r\nabcd\r\n0\r\n\r\n"
    parser = ResponseParser(keep_body=True)
    assert not parser.feed(raw[:50], 1.0)
    assert parser.status == 200 and parser.first_data_at is None
    assert parser.feed(raw[50:], 2.0)
    assert bytes(parser.body) == b"data: abcd" and parser.first_data_at == 2.0


def test_parser_rejects_a_response_that_is_not_http() -> None:
    with pytest.raises(ValueError, match="not an HTTP"):
        ResponseParser().feed(b"SSH-2.0-OpenSSH\r\n\r\n", 0.0)


def test_parser_rejects_a_body_without_a_length() -> None:
    with pytest.raises(ValueError, match="neither Content-Length nor chunked"):
        ResponseParser().feed(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n", 0.0)


def test_request_bytes_carry_the_body_length() -> None:
    raw = json_post("/x", {"a": 1})
    assert raw.startswith(b"POST /x HTTP/1.1\r\n") and b"Content-Length: 8\r\n" in raw and raw.endswith(b'{"a": 1}')
    assert request_bytes("GET", "/health") == b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


# --- statistics and targets --------------------------------------------------------------------


def test_percentiles_use_the_nearest_rank() -> None:
    values = [i / 1000 for i in range(1, 101)]  # 1..100 ms
    assert percentile(values, 50) == 0.05 and percentile(values, 99) == 0.099 and percentile(values, 100) == 0.1
    assert summarize_ms(values) == {"p50": 50.0, "p95": 95.0, "p99": 99.0}
    assert math.isnan(percentile([], 50)) and summarize_ms([]) == {"p50": None, "p95": None, "p99": None}


def test_percentile_rejects_an_out_of_range_rank() -> None:
    with pytest.raises(ValueError, match="percentile"):
        percentile([1.0], 0)


def test_results_of_rounds_merge() -> None:
    a = LoadResult(10, 1.0, (0.001,) * 10)
    b = LoadResult(30, 2.0, (0.002,) * 30)
    merged = LoadResult.merge([a, b])
    assert (merged.completed, merged.duration, merged.rate, len(merged.latencies)) == (40, 3.0, 40 / 3, 40)


def test_targets_pass_and_miss() -> None:
    assert Target("a", "ratio", 0.6, ">=", 0.5).status == "PASS"
    assert Target("b", "ratio", 0.4, ">=", 0.5).status == "MISS"
    assert Target("c", "p99", 4.0, "<=", 5.0).passed and not Target("d", "p99", None, "<=", 5.0).passed
    assert Target("e", "errors", 0, "==", 0).passed and not Target("f", "p99", math.nan, "<=", 5.0).passed


def test_target_rejects_an_unknown_comparison() -> None:
    with pytest.raises(ValueError, match="op must be"):
        Target("x", "y", 1.0, "<", 2.0)


# --- the load generator against real servers ----------------------------------------------------


async def test_closed_loop_counts_requests_on_the_reference(reference: Any) -> None:
    result = await closed_loop(reference.port, chat_factory(CHAT, "t", 10), connections=4, duration=0.5,
                               max_requests=100_000, expect=Expect(contains=b'"message_count"'))
    assert result.completed > 0 and result.error_count == 0
    assert len(result.latencies) == result.completed and result.rate > 0
    lat = result.latency_ms()
    assert 0 < lat["p50"] <= lat["p95"] <= lat["p99"]  # type: ignore[operator]


async def test_closed_loop_stops_at_its_request_count(service: Any) -> None:
    result = await closed_loop(service.port, chat_factory(CHAT, "t", 10), connections=2, duration=30,
                               max_requests=25, expect=Expect(contains=b'"message_count"'))
    assert result.completed == 25 and result.error_count == 0


async def test_closed_loop_counts_wrong_statuses_as_errors(service: Any) -> None:
    bad = json_post(CHAT, {"message": "no session id"})
    result = await closed_loop(service.port, lambda c, n: bad, connections=1, duration=30, max_requests=3)
    assert result.completed == 0 and result.errors == {"HTTP 400": 3}


async def test_closed_loop_paces_a_probe(service: Any) -> None:
    health = request_bytes("GET", "/health")
    result = await closed_loop(service.port, lambda c, n: health, connections=1, duration=0.3,
                               max_requests=1000, interval=0.05)
    # At most one request per 50 ms: 0.3 s leaves room for seven.
    assert 1 <= result.completed <= 7 and result.error_count == 0


async def test_closed_loop_counts_a_refused_connection(unused_tcp_port: int) -> None:
    result = await closed_loop(unused_tcp_port, lambda c, n: b"", connections=2, duration=0.2, max_requests=10)
    assert result.completed == 0 and sum(result.errors.values()) == 2
    assert all(kind.startswith("connect:") for kind in result.errors)


async def test_closed_loop_rejects_a_bad_shape() -> None:
    with pytest.raises(ValueError, match="positive"):
        await closed_loop(1, lambda c, n: b"", connections=0, duration=1, max_requests=1)


async def test_streams_are_timed_to_their_first_token(service: Any, reference: Any) -> None:
    for server in (service, reference):
        result = await closed_loop(server.port, chat_factory(STREAM, "s", 10), connections=2, duration=0.3,
                                   max_requests=100_000, expect=Expect(contains=STREAM_DONE))
        assert result.completed > 0 and result.error_count == 0
        assert len(result.first_data) == result.completed
        assert all(f <= t for f, t in zip(result.first_data, result.latencies, strict=True))


async def test_stream_burst_holds_every_stream_open(aiohttp_server: Any, tmp_path: Path) -> None:
    app = await create_app(make_settings(tmp_path, log_level="WARNING"), provider=BenchProvider(2, delay=0.2))
    server = await aiohttp_server(app)
    burst = StreamBurst(server.port, chat_factory(STREAM, "b", 1), 20, expect=Expect(contains=STREAM_DONE),
                        open_concurrency=8, timeout=30)
    result = await burst.run()
    assert burst.all_open.is_set()
    assert result.completed == 20 and result.error_count == 0 and result.peak_open == 20


async def test_stream_burst_rejects_a_bad_shape() -> None:
    with pytest.raises(ValueError, match="positive"):
        StreamBurst(1, lambda c, n: b"", 0, expect=Expect())


# --- results -------------------------------------------------------------------------------------


async def test_results_are_written_as_json_and_markdown(reference: Any, tmp_path: Path) -> None:
    load = await closed_loop(reference.port, chat_factory(CHAT, "r", 10), connections=2, duration=0.3,
                             max_requests=100_000)
    collector = Collector()
    side = {**load.summary(), "server": {"cpu_cores": 0.5, "cpu_ms_per_request": 0.1, "rss_peak_mib": 40.0}}
    collector.scenarios["1_chat"] = {"connections": 2, "reference": side, "service": side,
                                     "ratio": {"rate": 1.0, "p99": 1.0, "cpu_ms_per_request": 1.0}}
    collector.target("1.rate", "chat req/s, service / reference", 1.0, ">=", 0.5, "x")
    collector.curve("chat/reference/round0", [(float(i), 40.0) for i in range(1000)])
    results = {"command": "pytest", "generated_at": "2026-01-01T00:00:00Z", "elapsed_s": 1.0,
               "environment": {"cpus": 2, "pinning": "not pinned", "loadavg_start": [0, 0, 0],
                               "loadavg_end": [0, 0, 0], "load_generator": "benchmarks.load"},
               "scenarios": collector.scenarios, "targets": [t.to_dict() for t in collector.targets],
               "notes": ["a note"], "curves": collector.curves}
    json_path, md_path = write_results(results, tmp_path / "out", "smoke")
    loaded = json.loads(json_path.read_text())
    assert loaded["targets"][0]["status"] == "PASS"
    assert len(loaded["curves"]["chat/reference/round0"]) <= 300
    markdown = md_path.read_text()
    assert markdown == render_markdown(results)
    assert "| 1.rate | chat req/s, service / reference | 1.000 x | >= 0.5 x | **PASS** |" in markdown
    assert "| 1. Chat, 2 connections | reference |" in markdown and "- a note" in markdown


def test_chart_is_a_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from benchmarks.report import write_chart

    lat = {"latency_ms": {"p50": 1.0, "p95": 2.0, "p99": 3.0}}
    results = {"scenarios": {"1_chat": {"reference": lat, "service": lat}},
               "curves": {"streams/reference": [(0.0, 40.0), (1.0, 50.0)]}}
    path = write_chart(results, tmp_path / "chart.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_seeding_fills_the_store_and_measures_it() -> None:
    pytest.importorskip("psutil")
    from benchmarks.launcher import seed_sessions
    from msev15.store.sessions import SessionStore

    store = SessionStore(3600)
    report = seed_sessions(store, 30, 4, tenant="t")
    assert len(store) == 30 and store.get("t", "seed-0000029").visible_count == 4  # type: ignore[union-attr]
    assert report["sessions"] == 30 and report["text_bytes"] > 30 * 4 * 20 and report["rss_after"] > 0


def test_seeding_rejects_an_odd_message_count() -> None:
    pytest.importorskip("psutil")
    from benchmarks.launcher import seed_sessions
    from msev15.store.sessions import SessionStore

    with pytest.raises(ValueError, match="even number"):
        seed_sessions(SessionStore(3600), 3, 5)


async def test_the_redis_client_cost_is_measured_per_kind_of_call(redis: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from benchmarks import redis_trips

    monkeypatch.setattr(redis_trips, "CLIENT_CALLS", 20)
    cost = await redis_trips.client_cost(redis.url)
    assert set(cost) == {"get", "evalsha", "pipeline3", "wire_get", "wire_evalsha", "wire_pipeline3"}
    assert all(micros > 0 for micros in cost.values()), cost


async def test_postgres_cpu_counts_its_backends_those_that_exited_too(pg_cluster: Any) -> None:
    """Scenario 9's PostgreSQL CPU: a backend's work shows while it lives, and stays counted once
    it has exited (the postmaster reaped it)."""
    import asyncio

    import asyncpg
    import psutil

    from benchmarks.stores import _pg_cpu_seconds

    before = _pg_cpu_seconds(pg_cluster)
    conn = await asyncpg.connect(pg_cluster.url())
    backend = int(await conn.fetchval("SELECT pg_backend_pid()"))
    await conn.fetchval("SELECT count(*) FROM generate_series(1, 2000000)")
    during = _pg_cpu_seconds(pg_cluster)
    await conn.close()
    deadline = asyncio.get_running_loop().time() + 10
    while psutil.pid_exists(backend) and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.02)
    assert not psutil.pid_exists(backend)
    after = _pg_cpu_seconds(pg_cluster)
    assert during > before and after >= during, (before, during, after)


async def test_the_tracing_off_checks_are_counted_per_turn_and_timed() -> None:
    """Scenario 15's in-process parts: a chat turn through the real openai client makes one model
    request and formats its log lines; each check gets a CPU figure per call."""
    from benchmarks.tracing_off import HOOKS, count_hooks, time_hooks

    per_turn = await count_hooks(3, TOKENS)
    assert per_turn["model"] == 1.0 and per_turn["mcp"] == 0.0, per_turn
    assert per_turn["log"] >= 1.0, per_turn  # the turn's completion line, at least
    costs = await time_hooks(3, 1_000)
    assert set(costs) == set(HOOKS)
    assert all(math.isfinite(c["ns_per_call"]) and c["min_ns"] <= c["ns_per_call"] <= c["max_ns"]
               for c in costs.values()), costs
