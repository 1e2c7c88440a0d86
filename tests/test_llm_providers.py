"""The real ``openai`` client against the scripted server, as OpenAI and as Azure."""

from __future__ import annotations

import asyncio
import json

from msev15.config import SETTINGS
from msev15.events.context import BUS
from msev15.events.types import TurnCompleted
from msev15.store.context import ORDERS
from tests.conftest import assert_envelope, sse_events
from tests.llm_server import Call, Reply, ScriptedLLM


def _openai(llm: ScriptedLLM, **extra):
    return dict(llm_provider="openai", openai_base_url=f"{llm.url}/v1", openai_api_key="sk-test-123456",
                openai_model="gpt-test", llm_max_retries=0, **extra)


def _azure(llm: ScriptedLLM, **extra):
    return dict(llm_provider="auto", azure_openai_endpoint=llm.url, azure_openai_api_key="azure-key-abcdef",
                azure_openai_responses_deployment_name="gpt-4o-dep", llm_max_retries=0, **extra)


async def test_openai_shape_streams_and_keeps_context(service, llm: ScriptedLLM) -> None:
    client = await service(**_openai(llm))
    llm.push(Reply("Hi there, how can I help?"), Reply("Your name is Ada."))
    first = await client.post("/api/v1/chat/stream", json={"session_id": "s", "message": "Hi, I am Ada"})
    events = sse_events(await first.text())
    assert "".join(e["content"] for e in events if e["type"] == "token") == "Hi there, how can I help?"
    assert events[-1]["type"] == "done" and events[-1]["usage"]["prompt_tokens"] == 11
    second = await (await client.post("/api/v1/chat", json={"session_id": "s", "message": "What is my name?"})).json()
    assert second["message"] == "Your name is Ada." and second["message_count"] == 4
    assert llm.paths[0] == "/v1/chat/completions"
    assert llm.headers[0]["Authorization"] == "Bearer sk-test-123456"
    sent = llm.requests[1]
    assert sent["model"] == "gpt-test" and sent["stream"] is True
    assert sent["stream_options"] == {"include_usage": True}
    assert [m["role"] for m in sent["messages"]] == ["system", "user", "assistant", "user"]
    assert sent["messages"][1]["content"] == "Hi, I am Ada"
    assert sent["messages"][2]["content"] == "Hi there, how can I help?"
    assert "CustomerServiceAgent" in sent["messages"][0]["content"]
    assert {t["function"]["name"] for t in sent["tools"]} >= {"create_order", "send_email"}


async def test_azure_shape(service, llm: ScriptedLLM) -> None:
    client = await service(**_azure(llm))
    assert client.app[SETTINGS].provider == "azure"
    resp = await client.post("/api/v1/chat", json={"session_id": "s", "message": "hello"})
    assert resp.status == 200
    assert (await resp.json())["message"] == "Hello from the scripted model."
    assert llm.paths[0].startswith("/openai/deployments/gpt-4o-dep/chat/completions?api-version=")
    assert llm.headers[0]["api-key"] == "azure-key-abcdef"


async def test_context_is_trimmed(service, llm: ScriptedLLM) -> None:
    client = await service(**_openai(llm, session_max_context_messages=4))
    for i in range(4):
        await client.post("/api/v1/chat", json={"session_id": "s", "message": f"message {i}"})
    sent = llm.requests[-1]["messages"]
    assert [m["role"] for m in sent] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert sent[1]["content"] == "message 1" and sent[-1]["content"] == "message 3"


async def test_tool_calls_run_in_parallel_and_results_go_back(service, llm: ScriptedLLM) -> None:
    client = await service(**_openai(llm))
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
    assert kinds[:4] == ["tool_call", "tool_call", "tool_result", "tool_result"]
    assert events[0]["arguments"] == {"order_id": a["order_id"]}
    assert all(e["ok"] for e in events if e["type"] == "tool_result")
    assert kinds[-1] == "done"
    followup = llm.requests[1]["messages"]
    assert followup[-3]["tool_calls"][0]["id"] == "c1"
    results = {m["tool_call_id"]: json.loads(m["content"]) for m in followup if m["role"] == "tool"}
    assert results["c1"]["order"]["order_id"] == a["order_id"]
    assert results["c2"]["order"]["customer_id"] == "CUST-2"
    # The next turn still sees the tool exchange as context.
    await client.post("/api/v1/chat", json={"session_id": "s", "message": "thanks"})
    assert [m["role"] for m in llm.requests[2]["messages"]] == [
        "system", "user", "assistant", "tool", "tool", "assistant", "user"]


async def test_bad_tool_arguments_become_an_error_result(service, llm: ScriptedLLM) -> None:
    client = await service(**_openai(llm))
    llm.push(
        Reply(tool_calls=[Call("create_order", {"customer_id": "C1", "product_sku": "S", "quantity": -3,
                                                "price": 1, "shipping_address": "x"}),
                          Call("no_such_tool", {}),
                          Call("get_order_by_id", "{not json")]),
        Reply("Sorry, the quantity must be positive."),
    )
    resp = await client.post("/api/v1/chat/stream", json={"session_id": "s", "message": "order -3 things"})
    events = sse_events(await resp.text())
    results = [e for e in events if e["type"] == "tool_result"]
    assert [r["ok"] for r in results] == [False, False, False]
    # The reasons go back to the model (which can recover), not to the client.
    told = [json.loads(m["content"])["error"] for m in llm.requests[1]["messages"] if m["role"] == "tool"]
    assert "quantity" in told[0] and "unknown tool" in told[1] and "not valid JSON" in told[2]
    assert all("error" not in r for r in results)
    assert events[-1]["type"] == "done"
    assert await client.app[ORDERS].count("default") == 0


async def test_too_many_tool_rounds_ends_with_a_message(service, llm: ScriptedLLM) -> None:
    client = await service(**_openai(llm, agent_max_tool_rounds=2))
    loop_reply = Reply(tool_calls=[Call("get_all_orders", {})])
    llm.push(loop_reply, loop_reply, loop_reply)
    body = await (await client.post("/api/v1/chat", json={"session_id": "s", "message": "loop"})).json()
    assert "more steps than I'm allowed" in body["message"]
    assert len(llm.requests) == 2


async def test_model_error_gives_envelope_and_keeps_session_usable(service, llm: ScriptedLLM) -> None:
    client = await service(**_openai(llm))
    await client.post("/api/v1/chat", json={"session_id": "s", "message": "first"})
    llm.push(Reply(status=500))
    resp = await client.post("/api/v1/chat", json={"session_id": "s", "message": "second"})
    assert resp.status == 502
    assert_envelope(await resp.json(), "llm_error")
    llm.push(Reply(status=500))
    stream = await client.post("/api/v1/chat/stream", json={"session_id": "s", "message": "third"})
    events = sse_events(await stream.text())
    assert events[-1]["type"] == "error" and events[-1]["error"] == "llm_error"
    assert events[-1]["request_id"] == stream.headers["X-Request-ID"]
    assert [e["type"] for e in events].count("error") == 1 and "done" not in [e["type"] for e in events]
    # Failed turns are rolled back: history holds only the turn that succeeded.
    history = await (await client.get("/api/v1/sessions/s/history")).json()
    assert [m["content"] for m in history["messages"] if m["role"] == "user"] == ["first"]
    again = await client.post("/api/v1/chat", json={"session_id": "s", "message": "fourth"})
    assert again.status == 200 and (await again.json())["message_count"] == 4


async def test_transient_errors_are_retried_by_the_client(service, llm: ScriptedLLM) -> None:
    client = await service(**{**_openai(llm), "llm_max_retries": 2})
    llm.push(Reply(status=429), Reply(status=503), Reply("Recovered."))
    body = await (await client.post("/api/v1/chat", json={"session_id": "s", "message": "hi"})).json()
    assert body["message"] == "Recovered."
    assert len(llm.requests) == 3


async def test_unreachable_endpoint_is_503(service, llm: ScriptedLLM) -> None:
    url = llm.url
    await llm.close()
    client = await service(llm_provider="openai", openai_base_url=f"{url}/v1", llm_max_retries=0)
    resp = await client.post("/api/v1/chat", json={"session_id": "s", "message": "hi"})
    assert resp.status == 503
    assert_envelope(await resp.json(), "llm_unavailable")
    ready = await (await client.get("/health/readiness")).json()
    assert ready["checks"]["azure_openai"] == "unreachable"


async def test_timeout_is_llm_error(service, llm: ScriptedLLM) -> None:
    client = await service(**_openai(llm, llm_timeout_seconds=1))
    llm.push(Reply(hang=True))
    resp = await client.post("/api/v1/chat", json={"session_id": "s", "message": "hi"})
    assert resp.status == 502
    assert_envelope(await resp.json(), "llm_error")


async def test_client_disconnect_mid_stream_still_saves_the_turn(service, llm: ScriptedLLM) -> None:
    client = await service(**_openai(llm))
    words = " ".join(f"w{i}" for i in range(40))
    llm.push(Reply(words, delay=0.01))
    bus = client.app[BUS]
    with bus.subscribe((TurnCompleted,)) as done:
        resp = await client.post("/api/v1/chat/stream", json={"session_id": "s", "message": "talk"})
        await resp.content.readline()  # first frame arrived: the stream is live
        resp.close()  # the client goes away
        event = await asyncio.wait_for(done.get(), 10)
    assert event.message == words
    history = await (await client.get("/api/v1/sessions/s/history")).json()
    assert history["messages"][-1]["content"] == words


async def test_rate_limit_is_503_with_the_models_retry_after(service, llm: ScriptedLLM) -> None:
    client = await service(**_openai(llm))
    llm.push(Reply(status=429, headers={"retry-after": "7"}))
    resp = await client.post("/api/v1/chat", json={"session_id": "s", "message": "one"})
    assert resp.status == 503 and resp.headers["Retry-After"] == "7"
    assert_envelope(await resp.json(), "llm_unavailable")
    llm.push(Reply(status=429, headers={"retry-after-ms": "2500", "retry-after": "60"}))  # the ms header wins
    stream = await client.post("/api/v1/chat/stream", json={"session_id": "s", "message": "two"})
    events = sse_events(await stream.text())
    assert events[-1]["type"] == "error" and events[-1]["error"] == "llm_unavailable"
    assert events[-1]["retry_after"] == 3
    llm.push(Reply(status=429, headers={}))  # no hint from the model: no Retry-After invented
    resp = await client.post("/api/v1/chat", json={"session_id": "s", "message": "three"})
    assert resp.status == 503 and "Retry-After" not in resp.headers


async def test_answer_cut_off_mid_stream_is_llm_error(service, llm: ScriptedLLM) -> None:
    client = await service(**_openai(llm))
    llm.push(Reply("This answer is cut off before it ends", drop_after=3))
    stream = await client.post("/api/v1/chat/stream", json={"session_id": "s", "message": "talk"})
    events = sse_events(await stream.text())
    assert [e["type"] for e in events][:2] == ["token", "token"]
    assert events[-1]["type"] == "error" and events[-1]["error"] == "llm_error"
    assert "broke off" in events[-1]["message"]
    llm.push(Reply("Ends cleanly but too early", end_after=3))  # no finish_reason, no [DONE]
    stream = await client.post("/api/v1/chat/stream", json={"session_id": "s", "message": "again"})
    events = sse_events(await stream.text())
    assert events[-1]["type"] == "error" and "broke off" in events[-1]["message"]
