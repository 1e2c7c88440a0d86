"""Approvals and client tools with the real AG-UI and AI SDK clients under Node (tests/js/
approvals.flow.mjs): @ag-ui/client's interrupt outcome and resume entries, its frontend tools,
and ai@6's addToolApprovalResponse and addToolOutput. The model is the scripted server; its
replies are queued here in the order the Node tests make their requests."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest
from aiohttp.test_utils import TestServer

from msev15.app import create_app
from msev15.store.context import ORDERS
from tests.conftest import make_settings
from tests.llm_server import Call, Reply, ScriptedLLM
from tests.test_js_clients import JS, NODE_TIMEOUT_SECONDS, _node_or_skip


def _cancel(order_id: str, call_id: str) -> Reply:
    return Reply("", tool_calls=[Call("update_order_status", {"order_id": order_id, "status": "cancelled"}, call_id)])


async def test_approvals_with_the_real_clients(tmp_path: Path, llm: ScriptedLLM) -> None:
    node = _node_or_skip()
    app = await create_app(make_settings(tmp_path, llm_provider="openai", openai_base_url=f"{llm.url}/v1",
                                         openai_api_key="k", llm_max_retries=0,
                                         tool_approval=("update_order_status",)))
    async with TestServer(app, host="127.0.0.1") as server:
        orders = [await app[ORDERS].create("default", "CUST-1", "SKU-1", 1, 10, "1 Main St, Springfield")
                  for _ in range(2)]
        a, b = (str(o["order_id"]) for o in orders)
        llm.push(_cancel(a, "c-agui"), Reply("AG-UI: cancelled."),
                 Reply("", tool_calls=[Call("confirm_address", {"address": "1 Main St"}, "c-front")]),
                 Reply("Thanks, address confirmed."),
                 _cancel(b, "c-ai"), Reply("AI SDK: cancelled."),
                 Reply("", tool_calls=[Call("get_location", {}, "c-loc")]), Reply("You are in Porto."))
        proc = await asyncio.create_subprocess_exec(
            node, "--test", "--test-reporter=spec", "--test-concurrency=1", "approvals.flow.mjs", cwd=JS,
            env={**os.environ, "MSEV15_URL": str(server.make_url("")).rstrip("/"), "NO_COLOR": "1",
                 "ORDER_A": a, "ORDER_B": b},
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), NODE_TIMEOUT_SECONDS)
        except TimeoutError:
            proc.kill()
            out, _ = await proc.communicate()
            pytest.fail(f"node --test did not finish within {NODE_TIMEOUT_SECONDS} s:\n{out.decode()}")
        output = out.decode()
        assert proc.returncode == 0, f"node --test failed (exit {proc.returncode}):\n{output}"
        assert "fail 0" in output and "pass 4" in output, output
        for order_id in (a, b):  # both approved calls ran, once
            assert (await app[ORDERS].get("default", order_id))["status"] == "cancelled"
        assert llm.rejected == [], json.dumps(llm.rejected)
        assert len(llm.requests) == 8
