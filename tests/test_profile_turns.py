"""Tenant profiles applied to turns (issue 25): two tenants with their own instructions, tool
lists, approval rules and MCP servers (two real complaints servers) in one process, against the
scripted model server, which records what the model was sent."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from msev15.agent.context import RUNNER
from msev15.agent.handoff_timeout import TIMEOUTS
from msev15.store.context import ORDERS
from msev15.store.pending import PENDING
from msev15.store.profiles import PROFILES
from tests.complaints.server import McpTestServer, running_complaints_server
from tests.conftest import assert_envelope, sse_events
from tests.hanging_server import hanging_server
from tests.llm_server import Call, Reply, ScriptedLLM

SECRET = "MSEV15_TENANT_SECRET_ACME_COMPLAINTS"
ACME_RULES = "You are Acme's assistant. Never promise refunds."
GLOBEX_RULES = "You are Globex's assistant. Answer in one sentence."
BUILT_IN = {"create_order", "get_order_by_id", "get_orders_by_customer", "search_orders", "update_order_status",
            "get_all_orders"}


def acme_profile(url: str) -> dict[str, Any]:
    return {"instructions": ACME_RULES,
            "tools": {"allow": ["get_order_by_id", "update_order_status", "*complaint*"]},
            "approval": ["update_order_status"],
            "mcp_servers": [{"name": "acme", "url": url, "headers": {"Authorization": f"env:{SECRET}"}}]}


def globex_profile(url: str) -> dict[str, Any]:
    return {"instructions": GLOBEX_RULES,
            "tools": {"deny": ["update_order_status", "create_order", "send_*", "test_*", "handoff_*"]},
            "approval": [],
            "mcp_servers": [{"name": "globex", "url": url, "tools": ["search_*", "get_*"]}]}


@pytest.fixture
async def servers(tmp_path: Path,
                  monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[McpTestServer, McpTestServer]]:
    monkeypatch.setenv(SECRET, "Bearer tok-acme")  # read at connect time, never stored
    async with running_complaints_server(tmp_path / "acme.db", auth_token="tok-acme") as acme, \
            running_complaints_server(tmp_path / "globex.db") as globex:
        yield acme, globex


async def _service(service: Any, llm: ScriptedLLM, **overrides: Any) -> TestClient:
    settings: dict[str, Any] = dict(llm_provider="openai", openai_base_url=f"{llm.url}/v1", openai_api_key="k",
                                    llm_max_retries=0, tool_approval=("create_order",))
    settings.update(overrides)
    return await service(**settings)


async def _chat(client: TestClient, tenant: str, message: str, session: str = "s") -> dict[str, Any]:
    resp = await client.post("/api/v1/chat", json={"session_id": session, "tenant_id": tenant, "message": message})
    assert resp.status == 200, await resp.text()
    body: dict[str, Any] = await resp.json()
    return body


def _tools(request: dict[str, Any]) -> set[str]:
    return {t["function"]["name"] for t in request.get("tools", [])}


def _system(request: dict[str, Any]) -> str:
    first = request["messages"][0]
    assert first["role"] == "system"
    return str(first["content"])


def _tool_results(request: dict[str, Any]) -> list[str]:
    return [m["content"] for m in request["messages"] if m["role"] == "tool"]


async def test_two_tenants_each_get_their_instructions_tools_and_servers(service, llm: ScriptedLLM, servers) -> None:
    acme_server, globex_server = servers
    client = await _service(service, llm)
    store = client.app[PROFILES]
    assert await store.put("acme", acme_profile(acme_server.url), "test") == 1
    assert await store.put("globex", globex_profile(globex_server.url), "test") == 1

    llm.push(Reply("Hello from Acme."))
    body = await _chat(client, "acme", "hi")
    assert body["profile_version"] == 1
    acme_request = llm.requests[-1]
    assert _system(acme_request) == ACME_RULES
    # Exactly the allowed tools: built-ins by the allow-list, acme's server's complaint tools.
    assert _tools(acme_request) == {"get_order_by_id", "update_order_status", "register_complaint", "get_complaint",
                                    "search_complaints", "update_complaint", "resolve_complaint",
                                    "archive_complaint"}

    llm.push(Reply("Hello from Globex."))
    body = await _chat(client, "globex", "hi")
    assert body["profile_version"] == 1
    globex_request = llm.requests[-1]
    assert _system(globex_request) == GLOBEX_RULES
    names = _tools(globex_request)
    assert {"search_complaints", "get_complaint"} <= names and "register_complaint" not in names
    assert names.isdisjoint({"update_order_status", "create_order", "handoff_to_human"})
    assert {"get_order_by_id", "search_orders"} <= names

    llm.push(Reply("Hello."))
    body = await _chat(client, "plain", "hi")
    assert body["profile_version"] == 0
    plain_request = llm.requests[-1]
    assert _system(plain_request) not in (ACME_RULES, GLOBEX_RULES)
    assert BUILT_IN <= _tools(plain_request) and "search_complaints" not in _tools(plain_request)


async def test_mcp_calls_go_to_the_tenants_own_server(service, llm: ScriptedLLM, servers) -> None:
    acme_server, globex_server = servers
    client = await _service(service, llm)
    await client.app[PROFILES].put("acme", acme_profile(acme_server.url), "test")
    await client.app[PROFILES].put("globex", globex_profile(globex_server.url), "test")
    args = {"customer_id": "CUST-001", "description": "The parcel arrived damaged", "category": "product"}
    llm.push(Reply("", tool_calls=[Call("register_complaint", args, "c1")]), Reply("Registered."))
    await _chat(client, "acme", "complain")
    assert acme_server.store is not None and globex_server.store is not None
    found = acme_server.store.search(tenant_id="acme")
    assert len(found.complaints) == 1  # on acme's server, under the tenant from the turn
    assert globex_server.store.search(tenant_id="acme").complaints == []

    # Globex's model asks for acme's tool: it is not Globex's, it is refused and nothing runs.
    llm.push(Reply("", tool_calls=[Call("register_complaint", args, "c2")]), Reply("Sorry."))
    await _chat(client, "globex", "complain")
    assert "not available" in _tool_results(llm.requests[-1])[0]
    assert globex_server.store.search(tenant_id="globex").complaints == []
    assert acme_server.store.search(tenant_id="globex").complaints == []
    assert all("register_complaint" not in _tools(r) for r in llm.requests if _system(r) == GLOBEX_RULES)


async def test_a_denied_tool_is_refused_and_never_runs(service, llm: ScriptedLLM, servers) -> None:
    _, globex_server = servers
    client = await _service(service, llm)
    await client.app[PROFILES].put("globex", globex_profile(globex_server.url), "test")
    order = await client.app[ORDERS].create("globex", "CUST-1", "SKU-1", 1, 10, "1 Main Street, Springfield")
    order_id = str(order["order_id"])
    llm.push(Reply("", tool_calls=[Call("update_order_status", {"order_id": order_id, "status": "cancelled"}, "c1")]),
             Reply("I cannot do that."))
    body = await _chat(client, "globex", f"cancel {order_id}")
    assert body.get("status") is None  # no approval wait either: a denied call is an error at once
    assert "not available" in _tool_results(llm.requests[-1])[0]
    assert (await client.app[ORDERS].get("globex", order_id))["status"] == "pending"


async def test_approval_rules_are_the_tenants(service, llm: ScriptedLLM, servers) -> None:
    acme_server, globex_server = servers
    client = await _service(service, llm)
    await client.app[PROFILES].put("acme", acme_profile(acme_server.url), "test")
    await client.app[PROFILES].put("globex", {**globex_profile(globex_server.url),
                                              "tools": {"deny": ["update_order_status"]}}, "test")
    acme_order = str((await client.app[ORDERS].create("acme", "C", "SKU-1", 1, 10, "1 Main St, X"))["order_id"])
    llm.push(Reply("", tool_calls=[Call("update_order_status", {"order_id": acme_order, "status": "cancelled"},
                                        "c1")]))
    body = await _chat(client, "acme", "cancel")
    assert body["status"] == "waiting" and body["pending"][0]["name"] == "update_order_status"
    # Globex's approval list is empty: the service's TOOL_APPROVAL (create_order) does not apply.
    llm.push(Reply("", tool_calls=[Call("create_order", {"customer_id": "C", "product_id": "SKU-1", "quantity": 1,
                                                         "unit_price": 10, "shipping_address": "1 Main St, X"},
                                        "c2")]), Reply("Created."))
    body = await _chat(client, "globex", "order")
    assert body.get("status") is None and body["message"] == "Created."
    # A tenant without a profile keeps TOOL_APPROVAL.
    llm.push(Reply("", tool_calls=[Call("create_order", {"customer_id": "C", "product_id": "SKU-1", "quantity": 1,
                                                         "unit_price": 10, "shipping_address": "1 Main St, X"},
                                        "c3")]))
    assert (await _chat(client, "plain", "order"))["status"] == "waiting"


async def _acme_cancel_waiting(service: Any, llm: ScriptedLLM, url: str) -> tuple[TestClient, str, dict[str, Any]]:
    """Acme's profile (update_order_status needs approval) and a turn waiting on that call; the
    client, the order and the turn's reply."""
    client = await _service(service, llm)
    await client.app[PROFILES].put("acme", acme_profile(url), "test")
    order_id = str((await client.app[ORDERS].create("acme", "C", "SKU-1", 1, 10, "1 Main St, X"))["order_id"])
    llm.push(Reply("", tool_calls=[Call("update_order_status", {"order_id": order_id, "status": "cancelled"},
                                        "c1")]))
    return client, order_id, await _chat(client, "acme", "cancel")


async def test_a_write_is_used_by_the_next_turn_and_a_continuation_reads_it_again(service, llm: ScriptedLLM,
                                                                                   servers) -> None:
    acme_server, _ = servers
    client, order_id, paused = await _acme_cancel_waiting(service, llm, acme_server.url)
    store = client.app[PROFILES]
    assert paused["status"] == "waiting" and paused["profile_version"] == 1

    changed = {**acme_profile(acme_server.url), "instructions": "Acme v2 rules."}
    assert await store.put("acme", changed, "test", if_version=1) == 2
    llm.push(Reply("Done."))
    resp = await client.post("/api/v1/sessions/s/pending/c1?tenant_id=acme", json={"approve": True})
    assert resp.status == 202, await resp.text()
    decided = await resp.json()
    events = await client.get(f"/api/v1/sessions/s/turns/{decided['turn_id']}/events?tenant_id=acme")
    done = sse_events(await events.text())[-1]
    assert done["type"] == "done" and done["profile_version"] == 2
    assert _system(llm.requests[-1]) == "Acme v2 rules."
    assert (await client.app[ORDERS].get("acme", order_id))["status"] == "cancelled"  # the approved call ran

    llm.push(Reply("v2 again."))
    body = await _chat(client, "acme", "and now?")
    assert body["profile_version"] == 2 and _system(llm.requests[-1]) == "Acme v2 rules."
    status = await (await client.get(f"/api/v1/sessions/s/turns/{body['turn_id']}?tenant_id=acme")).json()
    assert status["profile_version"] == 2

    await store.delete("acme", "test")
    llm.push(Reply("defaults."))
    body = await _chat(client, "acme", "and now?")
    assert body["profile_version"] == 0 and _system(llm.requests[-1]) != "Acme v2 rules."


async def _approve_and_expire(client: TestClient, tenant: str, call_id: str) -> None:
    """Approve the waiting call as a lost continuation leaves it (only the store knows), then let
    the expiry settle it: the path that runs an approved call outside any turn."""
    assert await client.app[PENDING].decide(tenant, "s", call_id, {"approve": True, "decided_at": time.time()}) == 0
    assert await client.app[RUNNER].waiting.expire(now=time.time() + 86_401) == 1


async def test_an_approved_tenant_mcp_call_settled_by_expiry_runs_on_the_tenants_server(
        service, llm: ScriptedLLM, servers) -> None:
    acme_server, _ = servers
    client = await _service(service, llm)
    await client.app[PROFILES].put("acme", {**acme_profile(acme_server.url), "approval": ["register_complaint"]},
                                   "test")
    args = {"customer_id": "CUST-001", "description": "The parcel arrived damaged", "category": "product"}
    llm.push(Reply("", tool_calls=[Call("register_complaint", args, "c1")]))
    assert (await _chat(client, "acme", "complain"))["status"] == "waiting"
    await _approve_and_expire(client, "acme", "c1")
    assert acme_server.store is not None
    assert len(acme_server.store.search(tenant_id="acme").complaints) == 1  # not "unknown tool"


async def test_an_approved_call_the_profile_now_denies_is_not_run_when_expiry_settles_it(
        service, llm: ScriptedLLM, servers) -> None:
    acme_server, _ = servers
    client, order_id, paused = await _acme_cancel_waiting(service, llm, acme_server.url)
    store = client.app[PROFILES]
    assert paused["status"] == "waiting"
    denied = {**acme_profile(acme_server.url), "tools": {"allow": ["get_order_by_id"]}}
    assert await store.put("acme", denied, "test", if_version=1) == 2
    await _approve_and_expire(client, "acme", "c1")
    assert (await client.app[ORDERS].get("acme", order_id))["status"] == "pending"
    llm.push(Reply("It was not changed."))
    await _chat(client, "acme", "so?")
    assert any("not available to this agent" in r for r in _tool_results(llm.requests[-1]))


async def test_a_hanging_tenant_server_costs_only_that_tenants_turns(service, llm: ScriptedLLM, servers) -> None:
    _, globex_server = servers
    async with hanging_server() as (url, accepted):
        client = await _service(service, llm, mcp_connect_timeout_seconds=30)
        await client.app[PROFILES].put("slow", {"mcp_servers": [{"name": "slow", "url": url}]}, "test")
        await client.app[PROFILES].put("globex", globex_profile(globex_server.url), "test")
        llm.push(Reply("warm"))
        await _chat(client, "globex", "warm up", session="g0")  # globex's connection is open from here

        slow = asyncio.create_task(_chat(client, "slow", "hello", session="s1"))
        while not accepted[0]:  # the slow tenant's turn is now waiting for its server
            await asyncio.sleep(0.01)
        for i in range(5):  # meanwhile the other tenant's turns start, run and end
            llm.push(Reply(f"fast {i}"))
            body = await _chat(client, "globex", f"hi {i}", session=f"g{i + 1}")
            assert body["message"] == f"fast {i}"
        assert not slow.done()
        slow.cancel()
        await asyncio.gather(slow, return_exceptions=True)


async def test_each_tenant_gets_its_model_api_and_sampling(service, llm: ScriptedLLM) -> None:
    client = await _service(service, llm, openai_model="gpt-service")
    store = client.app[PROFILES]
    await store.put("acme", {"model": {"name": "gpt-acme", "api": "responses", "temperature": 0.2,
                                       "max_output_tokens": 300}}, "test")
    await store.put("globex", {"model": {"name": "gpt-globex", "temperature": 0.7}}, "test")
    llm.push(Reply("acme"), Reply("globex"), Reply("plain"))
    assert (await _chat(client, "acme", "hi"))["message"] == "acme"
    assert (await _chat(client, "globex", "hi"))["message"] == "globex"
    assert (await _chat(client, "plain", "hi"))["message"] == "plain"
    acme, globex, plain = llm.requests[-3:]
    assert "input" in acme and "messages" not in acme  # the Responses API
    assert (acme["model"], acme["temperature"], acme["max_output_tokens"]) == ("gpt-acme", 0.2, 300)
    assert "messages" in globex and (globex["model"], globex["temperature"]) == ("gpt-globex", 0.7)
    assert "max_completion_tokens" not in globex
    assert plain["model"] == "gpt-service" and "temperature" not in plain and "messages" in plain


async def test_on_azure_the_model_name_is_the_tenants_deployment(service, llm: ScriptedLLM) -> None:
    client = await service(llm_provider="auto", azure_openai_endpoint=llm.url, azure_openai_api_key="k",
                           azure_openai_responses_deployment_name="service-dep", llm_max_retries=0)
    await client.app[PROFILES].put("acme", {"model": {"name": "acme-dep"}}, "test")
    llm.push(Reply("acme"), Reply("plain"))
    await _chat(client, "acme", "hi")
    await _chat(client, "plain", "hi")
    acme, plain = llm.paths[-2:]
    assert acme.startswith("/openai/deployments/acme-dep/chat/completions?api-version=")
    assert plain.startswith("/openai/deployments/service-dep/chat/completions?api-version=")


async def test_a_tenants_handoff_settings_override_the_services(service, llm: ScriptedLLM) -> None:
    # The service never offers a handoff and would wait an hour; acme's profile offers it, 1 s.
    client = await _service(service, llm, handoff_enabled=False, handoff_timeout_seconds=3600)
    await client.app[PROFILES].put("acme", {"handoff": {"enabled": True, "timeout_seconds": 1}}, "test")
    await client.app[PROFILES].put("globex", {"handoff": {"enabled": True}}, "test")
    ask = "I want to talk to a person"
    handoff = Call("handoff_to_human", {"reason": "asked for a person", "summary": "wants a person"})
    for tenant in ("acme", "globex"):
        llm.push(Reply("", tool_calls=[handoff]))
        resp = await client.post("/api/v1/chat", json={"session_id": "s1", "tenant_id": tenant, "message": ask})
        assert (await resp.json())["status"] == "with_human"
        assert "handoff_to_human" in _tools(llm.requests[-1])
    llm.push(Reply("", tool_calls=[handoff]), Reply("I can help you myself."))
    plain = await client.post("/api/v1/chat", json={"session_id": "s1", "tenant_id": "plain", "message": ask})
    assert "status" not in await plain.json()  # no profile: the service's HANDOFF_ENABLED=false
    assert "handoff_to_human" not in _tools(llm.requests[-1]) and "unknown tool" in _tool_results(llm.requests[-1])[0]

    async def mode(tenant: str) -> str:
        history = await (await client.get(f"/api/v1/sessions/s1/history?tenant_id={tenant}")).json()
        return str(history["mode"])

    timeouts = client.app[TIMEOUTS]
    async with asyncio.timeout(15):
        while await mode("acme") != "agent":  # acme's own timeout gives the session back
            await asyncio.sleep(0.05)
    seen = timeouts.sweeps
    while timeouts.sweeps < seen + 2:  # globex keeps the service's hour, however many sweeps pass
        await asyncio.sleep(0.05)
    assert await mode("globex") == "waiting_for_human"
    assert timeouts.ticketed == 1


async def test_the_greeting_is_the_tenants(service) -> None:
    client = await service()
    await client.app[PROFILES].put("acme", {"greeting": "Welcome to Acme! How can I help?"}, "test")
    await client.app[PROFILES].put("globex", {"instructions": "x"}, "test")
    acme = await (await client.get("/api/v1/greeting?tenant_id=acme")).json()
    assert acme == {"tenant_id": "acme", "greeting": "Welcome to Acme! How can I help?", "profile_version": 1}
    globex = await (await client.get("/api/v1/greeting?tenant_id=globex")).json()
    assert globex == {"tenant_id": "globex", "greeting": None, "profile_version": 1}
    plain = await (await client.get("/api/v1/greeting?tenant_id=plain")).json()
    assert plain == {"tenant_id": "plain", "greeting": None, "profile_version": 0}
    bad = await client.get("/api/v1/greeting?tenant_id=bad%20tenant%0A")
    assert bad.status == 400
    assert_envelope(await bad.json(), "validation_error")


async def test_ag_ui_runs_report_the_version_too(service) -> None:
    client = await service()
    await client.app[PROFILES].put("acme", {"instructions": "Acme."}, "test")
    body = {"threadId": "t1", "runId": "r1", "state": {}, "tools": [], "context": [],
            "forwardedProps": {"tenant_id": "acme"}, "messages": [{"id": "u1", "role": "user", "content": "hi"}]}
    resp = await client.post("/api/v1/ag-ui", json=body, headers={"Accept": "text/event-stream"})
    finished = sse_events(await resp.text())[-1]
    assert finished["type"] == "RUN_FINISHED" and finished["result"]["profile_version"] == 1


async def test_client_tools_are_filtered_too(service, llm: ScriptedLLM) -> None:
    client = await _service(service, llm)
    await client.app[PROFILES].put("acme", {"tools": {"deny": ["get_location"]}}, "test")
    locate = {"name": "get_location", "description": "The customer's city.",
              "parameters": {"type": "object", "properties": {}}}
    weather = {"name": "get_weather", "description": "The weather there.",
               "parameters": {"type": "object", "properties": {}}}
    llm.push(Reply("", tool_calls=[Call("get_location", {}, "c-loc")]), Reply("I cannot tell where you are."))
    resp = await client.post("/api/v1/chat", json={"session_id": "s", "tenant_id": "acme", "message": "where am I?",
                                                   "tools": [locate, weather]})
    body = await resp.json()
    assert body.get("status") is None  # a denied client tool does not wait for the client
    assert "get_location" not in _tools(llm.requests[-2]) and "get_weather" in _tools(llm.requests[-2])
    assert "not available" in _tool_results(llm.requests[-1])[0]
    # Without a profile, the same call waits for the client.
    llm.push(Reply("", tool_calls=[Call("get_location", {}, "c-loc2")]))
    resp = await client.post("/api/v1/chat", json={"session_id": "s", "tenant_id": "plain", "message": "where am I?",
                                                   "tools": [locate]})
    assert (await resp.json())["status"] == "waiting"
