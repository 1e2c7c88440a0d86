"""SESSION_STORE=sqlite with `msev15 serve` as a real process: every answered turn survives
SIGKILL in the middle of a load, and a graceful restart keeps the listing exactly."""

from __future__ import annotations

import asyncio
import calendar
import json
import re
import signal
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.test_serve_process import Service, _start

pytestmark = pytest.mark.subprocess

ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
SESSIONS = 12  # driven at once; each session's turns one after another (a session runs one at a time)
# Answered turns (in all) at which the service is SIGKILLed, one crash per round; not multiples of
# one another, so no batch size of a "commit later" bug lines up with every crash.
KILL_AT = (37, 66)
MAX_TURNS_PER_SESSION = 200
LOAD_SECONDS = 60.0


@dataclass
class Answered:
    text: str
    answer: str
    message_count: int
    sent_at: float
    answered_at: float


@dataclass
class Load:
    kill_at: int
    answered: dict[tuple[str, str], list[Answered]]
    sent: dict[tuple[str, str], list[str]]
    total: int = 0
    enough: asyncio.Event = field(default_factory=asyncio.Event)


def _key(i: int) -> tuple[str, str]:
    return (f"tenant-{i % 2}", f"s{i}")


async def _turn_rest(http: aiohttp.ClientSession, url: str, tenant: str, sid: str, text: str) -> tuple[str, int] | None:
    async with http.post(f"{url}/api/v1/chat", json={"session_id": sid, "message": text, "tenant_id": tenant}) as resp:
        if resp.status != 200:
            return None
        body = await resp.json()
        return body["message"], body["message_count"]


async def _turn_sse(http: aiohttp.ClientSession, url: str, tenant: str, sid: str, text: str) -> tuple[str, int] | None:
    tokens: list[str] = []
    async with http.post(f"{url}/api/v1/chat/stream",
                         json={"session_id": sid, "message": text, "tenant_id": tenant}) as resp:
        if resp.status != 200:
            return None
        async for raw in resp.content:  # record `done` the moment it arrives, before any cut
            line = raw.decode().rstrip("\r\n")
            if not line.startswith("data: "):
                continue
            event = json.loads(line[len("data: "):])
            if event["type"] == "token":
                tokens.append(event["content"])
            elif event["type"] == "done":
                return "".join(tokens), event["message_count"]
            elif event["type"] == "error":
                return None
    return None


async def _drive(http: aiohttp.ClientSession, url: str, i: int, load: Load, round_: int) -> None:
    tenant, sid = key = _key(i)
    done, sent = load.answered.setdefault(key, []), load.sent.setdefault(key, [])
    turn = _turn_sse if i % 2 else _turn_rest
    for n in range(MAX_TURNS_PER_SESSION):
        text = f"round {round_} turn {n} of {sid}: where is my order ORD-{n:08d}?"
        sent.append(text)
        sent_at = time.time()
        try:
            result = await turn(http, url, tenant, sid, text)
        except (TimeoutError, aiohttp.ClientError, ConnectionError):
            return  # the process is gone: this turn was not answered
        if result is None:
            return
        done.append(Answered(text, result[0], result[1], sent_at, time.time()))
        load.total += 1
        if load.total >= load.kill_at:
            load.enough.set()


def _assert_history(history: dict[str, Any], load: Load, tenant: str, sid: str, crashes: int) -> None:
    """Every answered turn is there, in order, with its answer, count and timestamps. Besides them
    only turns that were sent but not answered (committed just before a crash), at most one per
    crash."""
    answered = {a.text: a for a in load.answered[(tenant, sid)]}
    messages = history["messages"]
    assert (history["session_id"], history["tenant_id"]) == (sid, tenant)
    assert [m["role"] for m in messages] == ["user", "assistant"] * (len(messages) // 2)
    assert history["message_count"] == len(messages)
    users = [m["content"] for m in messages[::2]]
    assert [u for u in users if u in answered] == [a.text for a in load.answered[(tenant, sid)]], (tenant, sid)
    unanswered = [u for u in users if u not in answered]
    assert set(unanswered) <= set(load.sent[(tenant, sid)]) and len(unanswered) <= crashes, unanswered
    for n, text in enumerate(users):
        a = answered.get(text)
        if a is None:
            continue
        assert a.message_count == 2 * (n + 1)
        user, assistant = messages[2 * n], messages[2 * n + 1]
        assert assistant["content"] == a.answer
        for m in (user, assistant):
            assert ISO.match(m["timestamp"]), m
            stamp = calendar.timegm(time.strptime(m["timestamp"], "%Y-%m-%dT%H:%M:%SZ"))
            assert int(a.sent_at) - 1 <= stamp <= a.answered_at + 1, (m, a)
    stamps = [m["timestamp"] for m in messages]
    assert stamps == sorted(stamps)
    assert ISO.match(history["created_at"]) and history["created_at"] == stamps[0]
    assert history["last_activity"] == stamps[-1]


async def _listing(http: aiohttp.ClientSession, url: str, tenant: str) -> dict[str, Any]:
    async with http.get(f"{url}/api/v1/sessions", params={"tenant_id": tenant, "limit": 200}) as resp:
        assert resp.status == 200
        return dict(await resp.json())


async def _stop(service: Service) -> None:
    service.proc.send_signal(signal.SIGTERM)
    code, out, err = await service.finish()
    assert code == 0, err
    assert "Server stopped gracefully. Goodbye!" in out


async def _crash_under_load(service: Service, load: Load, round_: int) -> None:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        drivers = [asyncio.create_task(_drive(http, service.url, i, load, round_), name=f"driver-{i}")
                   for i in range(SESSIONS)]
        try:
            await asyncio.wait_for(load.enough.wait(), LOAD_SECONDS)
            assert service.proc.returncode is None
            service.proc.send_signal(signal.SIGKILL)  # mid-load: turns are in flight right now
            await asyncio.wait_for(asyncio.gather(*drivers), 30)
        finally:
            for task in drivers:
                task.cancel()
            await asyncio.gather(*drivers, return_exceptions=True)
            if service.proc.returncode is None:
                service.proc.kill()
            await service.proc.wait()
    # 255: asyncio's child watcher sometimes loses the status of a killed child ("Unknown child
    # process") and reports 255; the process was alive until the SIGKILL either way.
    assert service.proc.returncode in (-signal.SIGKILL, 255)


async def _check_everything_answered_is_there(url: str, load: Load, crashes: int) -> None:
    async with aiohttp.ClientSession() as http:
        for i in range(SESSIONS):
            tenant, sid = _key(i)
            async with http.get(f"{url}/api/v1/sessions/{sid}/history", params={"tenant_id": tenant}) as resp:
                if not load.answered[(tenant, sid)] and resp.status == 404:
                    continue
                assert resp.status == 200, (tenant, sid)
                history = await resp.json()
            _assert_history(history, load, tenant, sid, crashes)
        for tenant in ("tenant-0", "tenant-1"):
            listing = await _listing(http, url, tenant)
            listed = {s["session_id"]: s["message_count"] for s in listing["sessions"]}
            assert listing["total"] == len(listed)
            for (t, sid), answered in load.answered.items():
                if t == tenant and answered:
                    assert listed[sid] >= 2 * len(answered)


async def test_every_answered_turn_survives_sigkill_mid_load(tmp_path: Path) -> None:
    db = tmp_path / "data" / "sessions.db"
    env = {"SESSION_STORE": "sqlite", "SESSION_DB_PATH": str(db)}
    load = Load(kill_at=0, answered={}, sent={})
    service = await _start(tmp_path, **env)
    try:
        assert "  • Sessions: sqlite (" in "\n".join(service.stdout)
        for round_, kill_at in enumerate(KILL_AT, 1):
            load.kill_at, load.enough = kill_at, asyncio.Event()
            await _crash_under_load(service, load, round_)
            assert load.total >= kill_at
            with sqlite3.connect(db) as conn:  # the file as the crash left it (its WAL is recovered on open)
                assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            service = await _start(tmp_path, **env)
            await _check_everything_answered_is_there(service.url, load, round_)
        async with aiohttp.ClientSession() as http:  # the restarted service goes on from where s0 was
            async with http.post(f"{service.url}/api/v1/chat",
                                 json={"session_id": "s0", "message": "still there?", "tenant_id": "tenant-0"}) as resp:
                body = await resp.json()
            history = await (await http.get(f"{service.url}/api/v1/sessions/s0/history",
                                            params={"tenant_id": "tenant-0"})).json()
            assert body["message_count"] == history["message_count"] >= 2 * len(load.answered[_key(0)]) + 2
        await _stop(service)
    finally:
        if service.proc.returncode is None:
            service.proc.kill()
            await service.proc.communicate()
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


async def test_a_graceful_restart_keeps_order_and_counts(tmp_path: Path) -> None:
    env = {"SESSION_STORE": "sqlite", "SESSION_DB_PATH": str(tmp_path / "sessions.db")}
    service = await _start(tmp_path, **env)
    async with aiohttp.ClientSession() as http:
        for n, sid in enumerate(["a", "b", "c", "b", "d", "a", "b"]):
            async with http.post(f"{service.url}/api/v1/chat", json={"session_id": sid, "message": f"m{n}"}) as resp:
                assert resp.status == 200
        before = await _listing(http, service.url, "default")
        histories = {sid: await (await http.get(f"{service.url}/api/v1/sessions/{sid}/history")).json()
                     for sid in "abcd"}
    await _stop(service)
    assert "[4 sessions]" in "\n".join(service.stdout)
    assert [s["session_id"] for s in before["sessions"]] == ["b", "a", "d", "c"]
    assert [s["message_count"] for s in before["sessions"]] == [6, 4, 2, 2]

    restarted = await _start(tmp_path, **env)
    try:
        async with aiohttp.ClientSession() as http:
            assert await _listing(http, restarted.url, "default") == before
            for sid, history in histories.items():
                assert await (await http.get(f"{restarted.url}/api/v1/sessions/{sid}/history")).json() == history
    finally:
        await _stop(restarted)
