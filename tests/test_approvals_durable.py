"""Pending calls are durable and shared (issue 23, rule 7): with SESSION_STORE=sqlite a paused turn
survives SIGTERM and SIGKILL of `msev15 serve` (a real process) and is decided after the restart;
with SESSION_STORE=redis a turn paused on instance A is decided on instance B (racing deciders on
both), and exactly one continuation runs."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from msev15.store.context import ORDERS
from msev15.store.orders import OrderRepository
from msev15.store.sqlite_pending import SqlitePendingCalls
from tests.conftest import sse_events
from tests.instances import two_apps
from tests.llm_server import Call, Reply, ScriptedLLM
from tests.test_serve_process import _start

T = "t1"


def _cancel(order_id: str) -> Reply:
    return Reply("Let me cancel it.", tool_calls=[
        Call("update_order_status", {"order_id": order_id, "status": "cancelled"}, "c-upd")])


async def _status(orders_db: Path, order_id: str) -> str:
    repo = await OrderRepository.open(orders_db, seed=False)
    try:
        return str((await repo.get(T, order_id))["status"])
    finally:
        await repo.close()


@pytest.mark.subprocess
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
async def test_a_paused_turn_survives_a_restart_and_is_decided_after_it(
        tmp_path: Path, llm: ScriptedLLM, sig: signal.Signals) -> None:
    orders_db = tmp_path / "orders.db"
    repo = await OrderRepository.open(orders_db, seed=False)
    order_id = str((await repo.create(T, "CUST-1", "SKU-1", 1, 10, "1 Main Street, Springfield"))["order_id"])
    await repo.close()
    env = {"SESSION_STORE": "sqlite", "SESSION_DB_PATH": str(tmp_path / "sessions.db"), "LLM_PROVIDER": "openai",
           "OPENAI_BASE_URL": f"{llm.url}/v1", "OPENAI_API_KEY": "k", "LLM_MAX_RETRIES": "0",
           "TOOL_APPROVAL": "update_order_status", "ORDER_DB_SEED": "false"}
    service = await _start(tmp_path, **env)
    try:
        llm.push(_cancel(order_id))
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{service.url}/api/v1/chat",
                                 json={"session_id": "s1", "tenant_id": T, "message": "Cancel it"}) as resp:
                assert (await resp.json())["status"] == "waiting"
        service.proc.send_signal(sig)
        code, _, err = await service.finish()
        assert code == (0 if sig == signal.SIGTERM else -signal.SIGKILL), err
    finally:
        if service.proc.returncode is None:
            service.proc.kill()
            await service.proc.communicate()
    assert await _status(orders_db, order_id) == "pending"

    service = await _start(tmp_path, **env)
    try:
        async with aiohttp.ClientSession() as http:
            base = f"{service.url}/api/v1/sessions/s1"
            pending = await (await http.get(f"{base}/pending", params={"tenant_id": T})).json()
            assert [p["call_id"] for p in pending["pending"]] == ["c-upd"]
            llm.push(Reply("It is cancelled."))
            async with http.post(f"{base}/pending/c-upd", params={"tenant_id": T}, json={"approve": True}) as resp:
                assert resp.status == 202
                turn_id = (await resp.json())["turn_id"]
            async with http.get(f"{base}/turns/{turn_id}/events", params={"tenant_id": T}) as resp:
                events = sse_events(await resp.text())
            assert events[-1]["type"] == "done", events
            assert llm.rejected == []
            history = await (await http.get(f"{base}/history", params={"tenant_id": T})).json()
            assert [m["role"] for m in history["messages"]] == ["user", "assistant"]
        service.proc.send_signal(signal.SIGTERM)
        assert (await service.finish())[0] == 0
    finally:
        if service.proc.returncode is None:
            service.proc.kill()
            await service.proc.communicate()
    assert await _status(orders_db, order_id) == "cancelled"


@pytest.mark.subprocess
async def test_a_decision_whose_continuation_was_lost_continues_after_a_restart(tmp_path: Path,
                                                                                llm: ScriptedLLM) -> None:
    """The approval the issue warns about losing: decided, but the instance stopped before its
    continuation ran. The restarted service finds the decided step and continues it."""
    orders_db = tmp_path / "orders.db"
    repo = await OrderRepository.open(orders_db, seed=False)
    order_id = str((await repo.create(T, "CUST-1", "SKU-1", 1, 10, "1 Main Street, Springfield"))["order_id"])
    await repo.close()
    env = {"SESSION_STORE": "sqlite", "SESSION_DB_PATH": str(tmp_path / "sessions.db"), "LLM_PROVIDER": "openai",
           "OPENAI_BASE_URL": f"{llm.url}/v1", "OPENAI_API_KEY": "k", "LLM_MAX_RETRIES": "0",
           "TOOL_APPROVAL": "update_order_status", "ORDER_DB_SEED": "false"}
    service = await _start(tmp_path, **env)
    try:
        llm.push(_cancel(order_id))
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{service.url}/api/v1/chat",
                                 json={"session_id": "s1", "tenant_id": T, "message": "Cancel it"}) as resp:
                assert (await resp.json())["status"] == "waiting"
        service.proc.send_signal(signal.SIGKILL)
        await service.finish()
    finally:
        if service.proc.returncode is None:
            service.proc.kill()
            await service.proc.communicate()
    # The decision made it to the store, its continuation did not (decided a while before the crash).
    store = await SqlitePendingCalls.open(tmp_path / "sessions.db")
    assert await store.decide(T, "s1", "c-upd", {"approve": True, "decided_at": time.time() - 120}) == 0
    await store.close()

    llm.push(Reply("It is cancelled."))
    service = await _start(tmp_path, **env)
    try:
        deadline = asyncio.get_running_loop().time() + 20
        while await _status(orders_db, order_id) != "cancelled":  # the start-up sweep continues the turn
            assert asyncio.get_running_loop().time() < deadline, "the decided call was never run"
            await asyncio.sleep(0.05)
        async with aiohttp.ClientSession() as http:
            deadline = asyncio.get_running_loop().time() + 20
            while True:
                history = await http.get(f"{service.url}/api/v1/sessions/s1/history", params={"tenant_id": T})
                if history.status == 200:
                    break
                assert asyncio.get_running_loop().time() < deadline, "the continued turn was never committed"
                await asyncio.sleep(0.05)
            assert [m["role"] for m in (await history.json())["messages"]] == ["user", "assistant"]
        assert llm.rejected == []
        service.proc.send_signal(signal.SIGTERM)
        assert (await service.finish())[0] == 0
    finally:
        if service.proc.returncode is None:
            service.proc.kill()
            await service.proc.communicate()


async def test_paused_on_a_decided_on_b_exactly_one_continuation(
        aiohttp_client: Any, tmp_path: Path, redis_url: str, llm: ScriptedLLM) -> None:
    a, b = await two_apps(aiohttp_client, tmp_path, redis_url, llm, openai_api_key="k",
                          tool_approval=("update_order_status",),
                          order_db_path=str(tmp_path / "orders.db"))  # one order database for both
    order_id = str((await a.app[ORDERS].create(T, "CUST-1", "SKU-1", 1, 10, "1 Main Street, Springfield"))["order_id"])
    llm.push(_cancel(order_id), Reply("It is cancelled."))
    paused = await (await a.post("/api/v1/chat", json={"session_id": "s1", "tenant_id": T,
                                                       "message": "Cancel it"})).json()
    assert paused["status"] == "waiting"
    pending = await (await b.get(f"/api/v1/sessions/s1/pending?tenant_id={T}")).json()
    assert [p["call_id"] for p in pending["pending"]] == ["c-upd"]
    url = f"/api/v1/sessions/s1/pending/c-upd?tenant_id={T}"
    deciders = (b, a, b, a)
    replies = await asyncio.gather(*(c.post(url, json={"approve": True}) for c in deciders))
    assert sorted(r.status for r in replies) == [202, 409, 409, 409]
    won = next(i for i, r in enumerate(replies) if r.status == 202)
    turn_id = (await replies[won].json())["turn_id"]
    winner, other = deciders[won], (a if deciders[won] is b else b)
    resp = await winner.get(f"/api/v1/sessions/s1/turns/{turn_id}/events?tenant_id={T}")
    assert sse_events(await resp.text())[-1]["type"] == "done"
    # The other instance sees the same turn once its log reaches Redis (the writer batches).
    deadline = asyncio.get_running_loop().time() + 10
    while (await other.get(f"/api/v1/sessions/s1/turns/{turn_id}?tenant_id={T}")).status == 404:
        assert asyncio.get_running_loop().time() < deadline, "the other instance never saw the continuation"
        await asyncio.sleep(0.02)
    resp = await other.get(f"/api/v1/sessions/s1/turns/{turn_id}/events?tenant_id={T}")
    assert sse_events(await resp.text())[-1]["type"] == "done"
    assert len(llm.requests) == 2 and llm.rejected == []
    tools = [m for m in llm.requests[-1]["messages"] if m["role"] == "tool"]
    assert len(tools) == 1 and json.loads(tools[0]["content"])["order"]["status"] == "cancelled"
    assert str((await b.app[ORDERS].get(T, order_id))["status"]) == "cancelled"
