"""Scenario 12: the per-turn profile read (issue 25), per store, in this process.

Every turn starts by asking the tenant's profile store which version is current
(``current_version``) and, for a tenant with a profile, reading the record (``current``: the same
read plus a hit in the per-process cache of immutable versions). This measures both, in
microseconds per call, sequentially and with 32 reads in flight, for memory, SQLite (the API keys
file; the read runs on the event loop, compared here with handing it to a thread) and Redis (a real
redis-server on loopback). The turn's own cost (the chat ratio) is measured by the scenarios that
run turns; this is the lookup alone, what a profile adds to each of them.

Run alone with ``python -m benchmarks.profile_lookup``; ``benchmarks.run`` includes it as "profiles".
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from msev15.store.profiles import MemoryProfiles, ProfileStore
from msev15.store.redis_profiles import RedisProfiles
from msev15.store.sqlite_profiles import SqliteProfiles

CALLS = 5_000
IN_FLIGHT = 32
PROFILE = {"instructions": "Be brief.", "tools": {"allow": ["lookup_*"]}, "model": {"temperature": 0.2}}


async def _per_call_us(call: Callable[[], Awaitable[object]], calls: int, in_flight: int) -> float:
    for _ in range(100):  # warm-up: connections, caches
        await call()
    per_worker = calls // in_flight

    async def worker() -> None:
        for _ in range(per_worker):
            await call()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(in_flight)))
    return (time.perf_counter() - started) / (per_worker * in_flight) * 1e6


async def _store_figures(store: ProfileStore, calls: int) -> dict[str, float]:
    await store.put("acme", PROFILE, "bench")
    return {
        "current_version_us": await _per_call_us(lambda: store.current_version("acme"), calls, 1),
        "current_us": await _per_call_us(lambda: store.current("acme"), calls, 1),
        "current_version_us_32_in_flight": await _per_call_us(lambda: store.current_version("acme"), calls, IN_FLIGHT),
        "no_profile_us": await _per_call_us(lambda: store.current_version("nobody"), calls, 1),
    }


async def _sqlite_in_a_thread_us(path: Path, calls: int) -> float:
    """The alternative the SQLite store does not take: the same lookup via asyncio.to_thread."""
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)

    def read() -> int:
        row = db.execute("SELECT current FROM profile_heads WHERE tenant_id = ?", ("acme",)).fetchone()
        return int(row[0]) if row else 0

    try:
        return await _per_call_us(lambda: asyncio.to_thread(read), calls, 1)
    finally:
        db.close()


async def measure(calls: int = CALLS) -> dict[str, Any]:
    from benchmarks.stores import _start_redis

    figures: dict[str, Any] = {"calls": calls, "in_flight": IN_FLIGHT}
    with tempfile.TemporaryDirectory(prefix="msev15-bench-profiles-") as tmp:
        memory = MemoryProfiles()
        figures["memory"] = await _store_figures(memory, calls)
        sqlite = SqliteProfiles(Path(tmp) / "api_keys.db")
        try:
            figures["sqlite"] = await _store_figures(sqlite, calls)
            figures["sqlite"]["to_thread_us"] = await _sqlite_in_a_thread_us(Path(tmp) / "api_keys.db", calls)
        finally:
            await sqlite.close()
        proc, url = await _start_redis(Path(tmp))
        try:
            redis = RedisProfiles(url)
            try:
                figures["redis"] = await _store_figures(redis, calls)
            finally:
                await redis.close()
        finally:
            proc.terminate()
            proc.wait(10)
    return figures


def main() -> None:
    print(json.dumps(asyncio.run(measure()), indent=2))


if __name__ == "__main__":
    main()
