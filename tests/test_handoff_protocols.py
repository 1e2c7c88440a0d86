"""While a person holds a session, every front door holds the customer's message for them: AG-UI
(a run with a CUSTOM ``handoff`` event, finished ``with_human``), the AI SDK (a ``data-handoff``
part), A2A (a task in INPUT_REQUIRED, with the real A2A client) and the MCP endpoint (a tool
result, with the real MCP client). The message reaches the history and the operator's session
stream, never the model (the scripted server counts its requests). One code path holds them all:
``start_turn`` (handlers/chat.py). The real AG-UI and AI SDK clients (Node) see the same in
tests/js/agui.test.mjs and tests/js/aisdk.test.mjs (run by tests/test_js_clients.py)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from a2a.types import a2a_pb2 as pb
from a2a.utils.errors import TaskNotFoundError
from ag_ui.core import EventType
from aiohttp.test_utils import TestClient
from google.protobuf.json_format import MessageToDict

from msev15.store.session_events import SESSION_EVENTS
from tests.instances import two_apps
from tests.llm_server import Reply, ScriptedLLM
from tests.test_a2a import base_url, clients, events_of, states, user_message
from tests.test_agui import run_input, validated
from tests.test_aisdk import chat_body, parts
from tests.test_handoff import HANDOFF, _history, _stream
from tests.test_mcp_endpoint import TOOL, mcp_client, text

__all__ = ["clients"]


async def _held_session(service: Any, llm: ScriptedLLM, session: str) -> TestClient:
    client: TestClient = await service(llm_provider="openai", openai_base_url=f"{llm.url}/v1", openai_api_key="k",
                                       llm_max_retries=0)
    llm.push(Reply(tool_calls=[HANDOFF]))
    events = await _stream(client, session, "A person please")
    assert events[-1]["status"] == "with_human"
    return client


async def _customer_messages(client: TestClient, session: str) -> list[str]:
    stored = await client.app[SESSION_EVENTS].read("default", session, 0, 0)
    return [e["content"] for _, e in stored if e["type"] == "customer_message"]


async def test_ag_ui_and_the_ai_sdk_hold_a_message_for_the_person(service, llm: ScriptedLLM) -> None:
    client = await _held_session(service, llm, "held")
    resp = await client.post("/api/v1/ag-ui", json=run_input("Hello from AG-UI", thread="held"),
                             headers={"Accept": "text/event-stream"})
    assert resp.status == 200
    events = validated(await resp.text())
    assert [e.type for e in events] == [EventType.RUN_STARTED, EventType.CUSTOM, EventType.RUN_FINISHED]
    assert events[1].name == "handoff" and events[1].value["mode"] == "waiting_for_human"
    assert events[2].result["status"] == "with_human"

    resp = await client.post("/api/v1/ai-sdk/chat", json=chat_body("Hello from the AI SDK", chat_id="held"))
    assert resp.status == 200
    got = parts(await resp.text())
    assert [p["type"] for p in got] == ["start", "start-step", "data-handoff", "finish-step", "finish"]
    assert got[2]["data"]["mode"] == "waiting_for_human"
    assert got[-1]["messageMetadata"]["status"] == "with_human"

    assert len(llm.requests) == 1  # only the turn that handed off
    history = await _history(client, "held")
    assert [m["content"] for m in history["messages"][2:]] == ["Hello from AG-UI", "Hello from the AI SDK"]
    assert await _customer_messages(client, "held") == ["Hello from AG-UI", "Hello from the AI SDK"]


async def test_a2a_holds_a_message_as_a_task_waiting_for_the_person(service, llm: ScriptedLLM,
                                                                    clients: Callable[..., Any]) -> None:
    client = await _held_session(service, llm, "held")
    a2a = await clients(base_url(client))
    events = await events_of(a2a, user_message("Hello from A2A", context_id="held"))
    assert states(events)[-1] == pb.TASK_STATE_INPUT_REQUIRED
    last = MessageToDict(events[-1].status_update.status.message)
    assert last["parts"][0]["data"]["status"] == "with_human"
    handoff = [MessageToDict(e.status_update.status.message)["parts"][0]["data"] for e in events
               if e.HasField("status_update") and e.status_update.status.HasField("message")]
    assert {"handoff": {"mode": "waiting_for_human", "reason": "", "summary": ""}} in handoff

    blocking = await clients(base_url(client), streaming=False)
    [task] = [e.task for e in await events_of(blocking, user_message("Still there?", context_id="held"))]
    assert task.status.state == pb.TASK_STATE_INPUT_REQUIRED
    assert len(llm.requests) == 1
    assert await _customer_messages(client, "held") == ["Hello from A2A", "Still there?"]


@pytest.mark.parametrize("store", ["memory", "redis"])
async def test_the_held_a2a_task_is_found_by_get_task(service, llm: ScriptedLLM, clients: Callable[..., Any],
                                                      store: str, request: pytest.FixtureRequest) -> None:
    shared = {"session_store": "redis", "redis_url": request.getfixturevalue("redis_url")} if store == "redis" else {}
    client: TestClient = await service(llm_provider="openai", openai_base_url=f"{llm.url}/v1", openai_api_key="k",
                                       llm_max_retries=0, **shared)
    llm.push(Reply(tool_calls=[HANDOFF]))
    assert (await _stream(client, "held", "A person please"))[-1]["status"] == "with_human"
    a2a = await clients(base_url(client), streaming=False)
    [task] = [e.task for e in await events_of(a2a, user_message("Still there?", context_id="held"))]
    assert task.status.state == pb.TASK_STATE_INPUT_REQUIRED
    assert await a2a.get_task(pb.GetTaskRequest(id=task.id)) == task
    listed = await a2a.list_tasks(pb.ListTasksRequest())
    assert task.id in {t.id for t in listed.tasks}
    with pytest.raises(TaskNotFoundError):  # another tenant does not find it
        await a2a.get_task(pb.GetTaskRequest(id=task.id, tenant="globex"))


async def test_the_held_a2a_task_is_found_by_another_instance(aiohttp_client: Any, tmp_path: Path, redis_url: str,
                                                              llm: ScriptedLLM, clients: Callable[..., Any]) -> None:
    a, b = await two_apps(aiohttp_client, tmp_path, redis_url, llm)
    llm.push(Reply(tool_calls=[HANDOFF]))
    assert (await _stream(a, "held", "A person please"))[-1]["status"] == "with_human"
    on_a = await clients(base_url(a), streaming=False)
    [task] = [e.task for e in await events_of(on_a, user_message("Still there?", context_id="held"))]
    assert task.status.state == pb.TASK_STATE_INPUT_REQUIRED
    on_b = await clients(base_url(b), streaming=False)
    assert await on_b.get_task(pb.GetTaskRequest(id=task.id)) == task


async def test_the_mcp_endpoint_holds_a_message_as_a_tool_result(service, llm: ScriptedLLM) -> None:
    client = await _held_session(service, llm, "held")
    async with mcp_client(client) as mcp:
        result = await mcp.call_tool(TOOL, {"message": "Hello from MCP", "session_id": "held"})
    assert not result.is_error and "person from the support team" in text(result)
    assert result.structured_content is not None and result.structured_content["status"] == "with_human"
    assert len(llm.requests) == 1
    assert await _customer_messages(client, "held") == ["Hello from MCP"]


async def test_a_session_the_agent_has_still_reaches_the_model_on_every_protocol(service, llm: ScriptedLLM) -> None:
    client: TestClient = await service(llm_provider="openai", openai_base_url=f"{llm.url}/v1", openai_api_key="k",
                                       llm_max_retries=0)
    llm.push(Reply("Hi from the model."), Reply("Hi again."))
    resp = await client.post("/api/v1/ag-ui", json=run_input("Hello", thread="free"),
                             headers={"Accept": "text/event-stream"})
    assert EventType.CUSTOM not in [e.type for e in validated(await resp.text())]
    got = parts(await (await client.post("/api/v1/ai-sdk/chat", json=chat_body("Hello", chat_id="free"))).text())
    assert "data-handoff" not in [p["type"] for p in got] and "status" not in got[-1]["messageMetadata"]
    assert len(llm.requests) == 2
