"""The chat, streaming and session endpoints against the real app (offline assistant)."""

from __future__ import annotations

import asyncio

import pytest

from tests.conftest import assert_envelope, sse_events
from tests.llm_server import Reply


async def _chat(client, session: str, message: str, tenant: str | None = None):
    body = {"session_id": session, "message": message}
    if tenant is not None:
        body["tenant_id"] = tenant
    return await client.post("/api/v1/chat", json=body)


async def test_chat_answers_and_counts_messages(service) -> None:
    client = await service()
    resp = await _chat(client, "abc-123", "hello")
    assert resp.status == 200
    body = await resp.json()
    assert body["session_id"] == "abc-123" and body["tenant_id"] == "default"
    assert body["message_count"] == 2
    assert "CustomerServiceAgent" in body["message"]
    assert body["timestamp"].endswith("Z")
    assert resp.headers["X-Request-ID"]
    second = await (await _chat(client, "abc-123", "thanks")).json()
    assert second["message_count"] == 4


async def test_stream_sends_tokens_then_done(service) -> None:
    client = await service()
    resp = await client.post("/api/v1/chat/stream", json={"session_id": "s", "message": "hello", "tenant_id": "t1"})
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/event-stream")
    assert resp.headers["Cache-Control"] == "no-cache"
    assert resp.headers["X-Accel-Buffering"] == "no"
    events = sse_events(await resp.text())
    assert [e["type"] for e in events[:-1]] == ["token"] * (len(events) - 1)
    assert events[-1] == {"type": "done", "session_id": "s", "message_count": 2,
                          "turn_id": resp.headers["X-Turn-ID"], "usage": events[-1]["usage"], "profile_version": 0}
    assert set(events[-1]["usage"]) == {"prompt_tokens", "completion_tokens"}
    text = "".join(e["content"] for e in events[:-1])
    history = await (await client.get("/api/v1/sessions/s/history?tenant_id=t1")).json()
    assert history["messages"][1]["content"] == text


async def test_stream_shows_tool_calls_and_results(service) -> None:
    client = await service(order_db_seed=True)
    resp = await client.post("/api/v1/chat/stream", json={"session_id": "s", "message": "list the recent orders"})
    events = sse_events(await resp.text())
    kinds = [e["type"] for e in events]
    assert kinds.index("tool_call") < kinds.index("tool_result") < kinds.index("token")
    call = next(e for e in events if e["type"] == "tool_call")
    result = next(e for e in events if e["type"] == "tool_result")
    assert call["name"] == "get_all_orders" and result["ok"] is True and result["call_id"] == call["call_id"]
    assert kinds[-1] == "done"


async def test_history_list_delete_shapes(service) -> None:
    client = await service()
    for session in ("a", "b", "c"):
        await _chat(client, session, "hello", "tenant-001")
    await _chat(client, "a", "thanks", "tenant-001")

    history = await (await client.get("/api/v1/sessions/a/history", params={"tenant_id": "tenant-001"})).json()
    assert history["session_id"] == "a" and history["tenant_id"] == "tenant-001"
    assert history["message_count"] == 4 and len(history["messages"]) == 4
    assert [m["role"] for m in history["messages"]] == ["user", "assistant", "user", "assistant"]
    assert set(history["messages"][0]) == {"role", "content", "timestamp"}

    listing = await (await client.get("/api/v1/sessions", params={"tenant_id": "tenant-001", "limit": "2"})).json()
    assert listing["total"] == 3 and listing["limit"] == 2 and listing["offset"] == 0
    assert [s["session_id"] for s in listing["sessions"]] == ["a", "c"]
    assert set(listing["sessions"][0]) == {"session_id", "message_count", "created_at", "last_activity", "mode"}
    assert listing["sessions"][0]["mode"] == "agent" and history["mode"] == "agent"

    deleted = await client.delete("/api/v1/sessions/a", params={"tenant_id": "tenant-001"})
    assert await deleted.json() == {"message": "Session deleted successfully", "session_id": "a", "messages_deleted": 4}
    gone = await client.get("/api/v1/sessions/a/history", params={"tenant_id": "tenant-001"})
    assert gone.status == 404
    body = await gone.json()
    assert body["error"] == "Session not found" and body["session_id"] == "a"


async def test_tenants_cannot_see_each_other(service) -> None:
    client = await service()
    await _chat(client, "secret", "hello", "company-A")
    for method, path in (("GET", "/api/v1/sessions/secret/history"), ("DELETE", "/api/v1/sessions/secret")):
        resp = await client.request(method, path, params={"tenant_id": "company-B"})
        assert resp.status == 404
        assert (await resp.json())["error"] == "Session not found"
    listing = await (await client.get("/api/v1/sessions", params={"tenant_id": "company-B"})).json()
    assert listing["total"] == 0 and listing["sessions"] == []
    default = await client.get("/api/v1/sessions/secret/history")  # no tenant = "default"
    assert default.status == 404
    still = await client.get("/api/v1/sessions/secret/history", params={"tenant_id": "company-A"})
    assert still.status == 200


async def test_concurrent_turns_on_one_session_keep_arrival_order(service, llm) -> None:
    """Five turns queued on one session while the first is held by the model: each request is sent
    only after the previous one was accepted (its stream's headers arrived), so arrival order is
    defined; the history and the message counts must follow it exactly."""
    client = await service(llm_provider="openai", openai_base_url=f"{llm.url}/v1", llm_max_retries=0)
    gate = asyncio.Event()
    messages = [f"hello number {i}" for i in range(5)]
    llm.push(Reply("answer 0", gate=gate, gate_after=1), *(Reply(f"answer {i}") for i in range(1, 5)))
    streams = []
    for text in messages:
        streams.append(await client.post("/api/v1/chat/stream", json={"session_id": "one", "message": text}))
    gate.set()
    done = [sse_events(await s.text())[-1] for s in streams]
    assert [d["message_count"] for d in done] == [2, 4, 6, 8, 10]
    history = await (await client.get("/api/v1/sessions/one/history")).json()
    assert [m["content"] for m in history["messages"]] == [
        part for i, text in enumerate(messages) for part in (text, f"answer {i}")]
    assert [r["messages"][-1]["content"] for r in llm.requests] == messages  # the model saw them in order


async def test_twenty_sessions_in_parallel(service) -> None:
    client = await service()
    responses = await asyncio.gather(*(_chat(client, f"s{i}", "hello") for i in range(20)))
    assert [r.status for r in responses] == [200] * 20
    listing = await (await client.get("/api/v1/sessions", params={"limit": "200"})).json()
    assert listing["total"] == 20


async def test_list_pagination_validation(service) -> None:
    client = await service()
    for params, field in (({"limit": "0"}, "limit"), ({"limit": "201"}, "limit"), ({"limit": "x"}, "limit"),
                          ({"offset": "-1"}, "offset"), ({"tenant_id": "bad tenant"}, "tenant_id")):
        resp = await client.get("/api/v1/sessions", params=params)
        assert resp.status == 400, params
        body = await resp.json()
        assert_envelope(body, "validation_error")
        assert body["field"] == field


@pytest.mark.parametrize(
    ("body", "field", "fragment"),
    [
        ({"message": "hi"}, "session_id", "session_id is required"),
        ({"session_id": "s"}, "message", "message is required"),
        ({"session_id": 5, "message": "hi"}, "session_id", "must be a string"),
        ({"session_id": "s", "message": 5}, "message", "must be a string"),
        ({"session_id": "s", "message": "   "}, "message", "must not be empty"),
        ({"session_id": "s", "message": "x" * 16001}, "message", "longer than"),
        ({"session_id": "-bad", "message": "hi"}, "session_id", "1-128 characters"),
        ({"session_id": "a" * 129, "message": "hi"}, "session_id", "1-128 characters"),
        ({"session_id": "s", "message": "hi", "tenant_id": "no spaces"}, "tenant_id", "1-128 characters"),
        ({"session_id": "s", "message": "hi", "tenant_id": ["x"]}, "tenant_id", "must be a string"),
        ({"session_id": "s", "message": "hi", "junk": 1}, "junk", "unknown field"),
        ({"session_id": "s", "message": "nul \x00 byte"}, "message", "NUL"),
    ],
)
@pytest.mark.parametrize("path", ["/api/v1/chat", "/api/v1/chat/stream"])
async def test_chat_validation_errors(service, path: str, body: dict, field: str, fragment: str) -> None:
    client = await service()
    resp = await client.post(path, json=body)
    assert resp.status == 400
    payload = await resp.json()
    assert_envelope(payload, "validation_error")
    assert payload["field"] == field
    assert fragment in payload["message"]
    listing = await (await client.get("/api/v1/sessions")).json()
    assert listing["total"] == 0  # nothing was stored


_TENANT_RULE = ("tenant_id must be 1-128 characters: letters, digits and . _ : @ - "
                "(starting with a letter or digit)")


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "message"),
    [
        ("POST", "/api/v1/chat", {"json": {"session_id": "s", "message": "hi", "tenant_id": "no spaces"}},
         _TENANT_RULE),
        ("POST", "/api/v1/chat/stream", {"json": {"session_id": "s", "message": "hi", "tenant_id": 7}},
         "tenant_id must be a string"),
        ("GET", "/api/v1/sessions", {"params": {"tenant_id": "-x"}}, _TENANT_RULE),
        ("GET", "/api/v1/sessions/s/history", {"params": {"tenant_id": "a" * 129}}, _TENANT_RULE),
        ("DELETE", "/api/v1/sessions/s", {"params": {"tenant_id": "x\n"}}, _TENANT_RULE),
    ],
)
async def test_bad_tenant_ids_are_refused_with_the_rule(service, method: str, path: str, kwargs: dict,
                                                         message: str) -> None:
    """The one tenant rule (common.tenancy) in the API's words: the rule, never the value sent."""
    client = await service()
    resp = await client.request(method, path, **kwargs)
    assert resp.status == 400
    payload = await resp.json()
    assert_envelope(payload, "validation_error")
    assert (payload["field"], payload["message"]) == ("tenant_id", message)


async def test_body_must_be_a_json_object(service) -> None:
    client = await service()
    for raw in (b"[1, 2]", b'"text"', b"null"):
        resp = await client.post("/api/v1/chat", data=raw, headers={"Content-Type": "application/json"})
        assert resp.status == 400
        assert_envelope(await resp.json(), "validation_error")


async def test_malformed_json_and_bad_encoding(service) -> None:
    client = await service()
    resp = await client.post("/api/v1/chat", data=b'{"session_id": ', headers={"Content-Type": "application/json"})
    assert resp.status == 400
    assert_envelope(await resp.json(), "invalid_json")
    resp = await client.post("/api/v1/chat", data=b'{"session_id": "\xff"}',
                             headers={"Content-Type": "application/json"})
    assert resp.status == 400
    assert_envelope(await resp.json(), "invalid_json")


async def test_wrong_content_type_is_415(service) -> None:
    client = await service()
    resp = await client.post("/api/v1/chat/stream", data="session_id=s&message=hi",
                             headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert resp.status == 415
    assert_envelope(await resp.json(), "unsupported_media_type")


async def test_history_of_unknown_session_and_bad_id(service) -> None:
    client = await service()
    resp = await client.get("/api/v1/sessions/nobody/history")
    assert resp.status == 404
    body = await resp.json()
    assert body["error"] == "Session not found" and body["session_id"] == "nobody"
    assert body["request_id"] and body["timestamp"]
    resp = await client.delete("/api/v1/sessions/nobody")
    assert resp.status == 404
    resp = await client.get("/api/v1/sessions/bad%20id/history")
    assert resp.status == 400
    assert_envelope(await resp.json(), "validation_error")
