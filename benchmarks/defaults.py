"""Scenario 7: scenario 1's chat load against ``msev15 serve`` exactly as ``make run`` starts it.

Default settings (the offline assistant, its tools, the default MCP URL with nothing behind it,
INFO logging) except that the log also goes to a file, in a scratch working directory so the
relative default paths (database, logs, outbox) land there. Measured next to the same bare
reference as scenario 1, in the same run.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.collect import Collector, ratio
from benchmarks.config import BenchConfig
from benchmarks.load import CHAT, chat_factory, closed_loop
from benchmarks.servers import ServerError, ServerProcess
from benchmarks.stats import LoadResult
from benchmarks.system import free_port, pin
from benchmarks.traffic import STARTUP_LIMIT, _alternate, _side, _wait_healthy

COMMAND = "msev15 serve (make run's defaults, LOG_TO_FILE=true)"


def _env(port: int) -> dict[str, str]:
    import os

    from msev15.config import VARIABLES

    env = {k: v for k, v in os.environ.items() if k not in {var.name for var in VARIABLES}}
    env.update({"SERVER_HOST": "127.0.0.1", "SERVER_PORT": str(port), "LOG_TO_FILE": "true"})
    return env


async def _start_serve(workdir: Path, cores: frozenset[int] | None) -> ServerProcess:
    port = free_port()
    stderr_path = workdir / "serve.err"
    with stderr_path.open("wb") as stderr:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "msev15", "serve", cwd=workdir, env=_env(port),
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=stderr)
    pin(cores, proc.pid)
    if await _wait_healthy(proc, port, time.perf_counter()) is None:
        proc.kill()
        await proc.wait()
        raise ServerError(f"msev15 serve did not answer /health within {STARTUP_LIMIT:g}s")
    return ServerProcess("serve-defaults", proc, stderr_path, {"port": port}, {})


async def chat_on_defaults(cfg: BenchConfig, ref: ServerProcess, cores: frozenset[int] | None,
                           collector: Collector) -> None:
    print("Scenario 7: chat against msev15 serve on the shipped defaults", flush=True)
    with tempfile.TemporaryDirectory(prefix="msev15-bench-defaults-") as tmp:
        serve = await _start_serve(Path(tmp), cores)
        try:
            await closed_loop(serve.port, chat_factory(CHAT, "warm7", cfg.session_every), connections=cfg.connections,
                              duration=cfg.warmup_seconds, max_requests=cfg.max_requests)

            async def make(server: ServerProcess, round_no: int, seconds: float) -> tuple[LoadResult, None]:
                factory = chat_factory(CHAT, f"s7r{round_no}", cfg.session_every)
                return await closed_loop(server.port, factory, connections=cfg.connections, duration=seconds,
                                         max_requests=cfg.max_requests), None

            runs = await _alternate(cfg, [ref, serve], "defaults", collector, make)
            log_bytes = sum(f.stat().st_size for f in Path(tmp).rglob("*.log*") if f.is_file())
        finally:
            await serve.stop()
    (ref_load, ref_samplers, _), (svc_load, svc_samplers, _) = runs[ref.label], runs[serve.label]
    ref_side, svc_side = _side(ref_load, ref_samplers), _side(svc_load, svc_samplers)
    collector.scenarios["7_chat_defaults"] = {
        "command": COMMAND, "connections": cfg.connections, "new_session_every": cfg.session_every,
        "log_file_bytes": log_bytes, "reference": ref_side, "service": svc_side,
        "ratio": {"rate": ratio(svc_load.rate, ref_load.rate),
                  "p99": ratio(svc_side["latency_ms"]["p99"], ref_side["latency_ms"]["p99"]),
                  "cpu_ms_per_request": ratio(svc_side["server"]["cpu_ms_per_request"],
                                              ref_side["server"]["cpu_ms_per_request"])},
    }
    collector.target("7.rate", "chat req/s on the shipped defaults (msev15 serve), service / reference",
                     ratio(svc_load.rate, ref_load.rate), ">=", 0.5, "x")
    collector.target("7.errors", "chat errors (msev15 serve on the defaults)", svc_load.error_count, "==", 0)
