"""LLM_API=responses: the real ``openai`` client against the scripted Responses API."""

from __future__ import annotations

import json

from msev15.store.context import ORDERS
from tests.conftest import assert_envelope, sse_events
from tests.llm_server import Call, Reply, ScriptedLLM


def _responses(llm: ScriptedLLM, **extra):
    return dict(llm_provider="openai", llm_api="responses", openai_base_url=f"{llm.url}/v1",
                openai_api_key="sk-test-123456", openai_model="gpt-test", llm_max_retries=0, **extra)


async def test_streams_text_keeps_context_and_reports_usage(service, llm: ScriptedLLM) -> None:
    client = await service(**_responses(llm))
    llm.push(Reply("Hi there, how can I help?"), Reply("Your name is Ada."))
    first = await client.post("/api/v1/chat/stream", json={"session_id": "s", "message": "Hi, I am Ada"})
    events = sse_events(await first.text())
    assert [e["content"] for e in events if e["type"] == "token"] == ["Hi ", "there, ", "how ", "can ", "I ", "help?"]
    assert events[-1]["type"] == "done"
    assert events[-1]["usage"] == {"prompt_tokens": 11, "completion_tokens": 6}  # from response.completed
    second = await (await client.post("/api/v1/chat", json={"session_id": "s", "message": "What is my name?"})).json()
    assert second["message"] == "Your name is Ada." and second["message_count"] == 4
    assert llm.paths == ["/v1/responses", "/v1/responses"]
    assert llm.headers[0]["Authorization"] == "Bearer sk-test-123456"
    sent = llm.requests[1]
    assert sent["model"] == "gpt-test" and sent["stream"] is True and sent["store"] is False
    assert [(i.get("type", "message"), i.get("role")) for i in sent["input"]] == [
        ("message", "system"), ("message", "user"), ("message", "assistant"), ("message", "user")]
    assert sent["input"][2]["content"] == "Hi there, how can I help?"
    assert "CustomerServiceAgent" in sent["input"][0]["content"]
    tools = {t["name"]: t for t in sent["tools"]}
    assert {"create_order", "send_email"} <= set(tools)
    assert tools["create_order"]["type"] == "function" and tools["create_order"]["strict"] is False
    assert tools["create_order"]["parameters"]["properties"]["quantity"]


async def test_function_calls_run_and_their_outputs_go_back(service, llm: ScriptedLLM) -> None:
    client = await service(**_responses(llm))
    repo = client.app[ORDERS]
    a = await repo.create("default", "CUST-1", "SKU-A", 1, 5.0, "1 Main St")
    b = await repo.create("default", "CUST-2", "SKU-B", 2, 7.5, "2 High St")
    llm.push(
        Reply(tool_calls=[Call("get_order_by_id", {"order_id": a["order_id"]}, "c1"),
                          Call("get_order_by_id", {"order_id": b["order_id"]}, "c2")]),
        Reply("Both orders are pending."),
    )
    resp = await client.post("/api/v1/chat/stream", json={"session_id": "s", "message": "status of my orders?"})
    events = sse_events(await resp.text())
    kinds = [e["type"] for e in events]
    assert kinds[:4] == ["tool_call", "tool_call", "tool_result", "tool_result"] and kinds[-1] == "done"
    # The arguments arrived in two deltas each; the tool saw them whole.
    assert events[0]["arguments"] == {"order_id": a["order_id"]} and events[0]["call_id"] == "c1"
    assert all(e["ok"] for e in events if e["type"] == "tool_result")
    followup = llm.requests[1]["input"]
    calls = [i for i in followup if i.get("type") == "function_call"]
    outputs = {i["call_id"]: json.loads(i["output"]) for i in followup if i.get("type") == "function_call_output"}
    assert [(c["call_id"], c["name"]) for c in calls] == [("c1", "get_order_by_id"), ("c2", "get_order_by_id")]
    assert json.loads(calls[0]["arguments"]) == {"order_id": a["order_id"]}
    assert outputs["c1"]["order"]["order_id"] == a["order_id"]
    assert outputs["c2"]["order"]["customer_id"] == "CUST-2"
    # The next turn sends the whole exchange again, and the server accepts it (every call answered).
    again = await client.post("/api/v1/chat", json={"session_id": "s", "message": "thanks"})
    assert again.status == 200 and llm.rejected == []
    assert [i.get("type", i.get("role")) for i in llm.requests[2]["input"]] == [
        "system", "user", "function_call", "function_call", "function_call_output", "function_call_output",
        "assistant", "user"]


async def test_errors_map_as_for_chat_completions(service, llm: ScriptedLLM) -> None:
    client = await service(**_responses(llm))
    llm.push(Reply(status=500))
    resp = await client.post("/api/v1/chat", json={"session_id": "s", "message": "one"})
    assert resp.status == 502
    assert_envelope(await resp.json(), "llm_error")
    llm.push(Reply(status=429, headers={"retry-after": "7"}))
    resp = await client.post("/api/v1/chat", json={"session_id": "s", "message": "two"})
    assert resp.status == 503 and resp.headers["Retry-After"] == "7"
    assert_envelope(await resp.json(), "llm_unavailable")
    llm.push(Reply(fail_in_stream=True))  # HTTP 200, then response.failed
    stream = await client.post("/api/v1/chat/stream", json={"session_id": "s", "message": "three"})
    events = sse_events(await stream.text())
    assert events[-1]["type"] == "error" and events[-1]["error"] == "llm_error"
    assert "scripted failure" in events[-1]["message"]
    llm.push(Reply("This answer is cut off before it ends", drop_after=4))
    stream = await client.post("/api/v1/chat/stream", json={"session_id": "s", "message": "four"})
    events = sse_events(await stream.text())
    assert events[-1]["type"] == "error" and events[-1]["error"] == "llm_error"
    llm.push(Reply("Ends cleanly but too early", end_after=5))  # no response.completed
    stream = await client.post("/api/v1/chat/stream", json={"session_id": "s", "message": "five"})
    events = sse_events(await stream.text())
    assert events[-1]["type"] == "error" and "broke off" in events[-1]["message"]
    history = await client.get("/api/v1/sessions/s/history")
    assert history.status == 404  # failed turns are rolled back: the session never got a message


async def test_transient_errors_are_retried_by_the_client(service, llm: ScriptedLLM) -> None:
    client = await service(**{**_responses(llm), "llm_max_retries": 2})
    llm.push(Reply(status=429), Reply(status=503), Reply("Recovered."))
    body = await (await client.post("/api/v1/chat", json={"session_id": "s", "message": "hi"})).json()
    assert body["message"] == "Recovered."
    assert len(llm.requests) == 3


async def test_timeout_and_unreachable(service, llm: ScriptedLLM) -> None:
    client = await service(**_responses(llm, llm_timeout_seconds=1))
    llm.push(Reply(hang=True))
    resp = await client.post("/api/v1/chat", json={"session_id": "s", "message": "hi"})
    assert resp.status == 502
    assert_envelope(await resp.json(), "llm_error")
    url = llm.url
    await llm.close()
    gone = await service(llm_provider="openai", llm_api="responses", openai_base_url=f"{url}/v1", llm_max_retries=0)
    resp = await gone.post("/api/v1/chat", json={"session_id": "s", "message": "hi"})
    assert resp.status == 503
    assert_envelope(await resp.json(), "llm_unavailable")
