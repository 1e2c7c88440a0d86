"""Memory per tenant is bounded: session caps that evict from the tenant holding the most, a byte
budget per session, a character budget for the model's context and a cap on the model's output."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from msev15.store.base import SESSIONS
from msev15.store.sessions import SessionStore
from tests.conftest import assert_envelope
from tests.llm_server import Reply, ScriptedLLM


def _openai(llm: ScriptedLLM, **extra: Any) -> dict[str, Any]:
    return dict(llm_provider="openai", openai_base_url=f"{llm.url}/v1", openai_api_key="sk-test-123456",
                llm_max_retries=0, **extra)


def _commit(store: SessionStore, tenant: str, session: str, text: str = "hi", answer: str = "hello") -> int:
    return store.commit_turn(tenant, session, text, 0.0, [], answer)


# --- session caps ------------------------------------------------------------------------------

async def test_one_tenants_flood_never_evicts_another_tenants_session(service) -> None:
    """The reported failure: a tenant's chats past SESSION_MAX_SESSIONS made another's history 404."""
    client = await service(session_max_sessions=20)
    victim = {"session_id": "mine", "message": "hello", "tenant_id": "victim"}
    assert (await client.post("/api/v1/chat", json=victim)).status == 200
    for i in range(60):  # three times the global cap, all from one tenant
        resp = await client.post("/api/v1/chat", json={"session_id": f"flood-{i}", "message": "hi",
                                                       "tenant_id": "attacker"})
        assert resp.status == 200
    history = await client.get("/api/v1/sessions/mine/history", params={"tenant_id": "victim"})
    assert history.status == 200, await history.text()
    assert len((await history.json())["messages"]) == 2
    store = client.server.app[SESSIONS].store  # the in-memory store itself
    assert len(store) == 20
    page = await client.get("/api/v1/sessions", params={"tenant_id": "attacker", "limit": 100})
    assert (await page.json())["total"] == 19  # the attacker paid for its own flood


def test_the_tenant_holding_the_most_loses_its_least_recently_active() -> None:
    store = SessionStore(3600, max_sessions=6)
    for i in range(3):
        _commit(store, "a", f"a{i}")
    for i in range(2):
        _commit(store, "b", f"b{i}")
    _commit(store, "c", "c0")
    _commit(store, "a", "a0")  # a0 is now a's most recent; a1 its least recently active
    _commit(store, "c", "c1")  # over the cap: a holds the most
    assert store.get("a", "a1") is None
    kept = [("a", "a0"), ("a", "a2"), ("b", "b0"), ("b", "b1"), ("c", "c0"), ("c", "c1")]
    assert all(store.get(t, s) for t, s in kept)
    assert store.evicted == 1


def test_a_tenant_over_its_own_cap_loses_its_own_oldest_session() -> None:
    store = SessionStore(3600, max_sessions=1000, max_sessions_per_tenant=3)
    _commit(store, "quiet", "q")
    for i in range(10):
        _commit(store, "loud", f"l{i}")
    assert store.page("loud", 50, 0).total == 3
    assert [s.session_id for s in store.page("loud", 50, 0).sessions] == ["l9", "l8", "l7"]
    assert store.get("quiet", "q") is not None


def test_deleting_and_expiring_keep_the_per_tenant_counts_right() -> None:
    now = [0.0]
    store = SessionStore(10, clock=lambda: now[0], max_sessions=4)
    for i in range(3):
        _commit(store, "a", f"a{i}")
    store.delete("a", "a0")
    now[0] = 100.0
    assert store.expire() == 2
    for i in range(4):
        _commit(store, "b", f"b{i}")
    _commit(store, "a", "fresh")  # b holds the most (4 of 5): b0 goes, not the newcomer
    assert store.get("a", "fresh") is not None and store.get("b", "b0") is None


# --- bytes per session ---------------------------------------------------------------------------

def test_a_session_keeps_its_newest_whole_turns_within_its_byte_budget() -> None:
    store = SessionStore(3600, max_bytes=10_000)
    for i in range(20):
        _commit(store, "t", "s", f"question {i} " + "q" * 2_000, f"answer {i} " + "a" * 1_000)
    session = store.get("t", "s")
    assert session is not None
    assert session.size <= 10_000
    assert session.messages[0].role == "user"  # whole turns only
    last = session.messages[-1].content
    assert last is not None and last.startswith("answer 19")
    assert session.visible_count == len(session.messages) == 6  # 3 turns of ~3 KB fit in 10 KB
    assert session.size == sum(len((m.content or "").encode()) for m in session.messages)


def test_the_newest_turn_stays_even_when_it_alone_is_over_budget() -> None:
    store = SessionStore(3600, max_bytes=1_024)
    _commit(store, "t", "s", "small", "small")
    _commit(store, "t", "s", "x" * 5_000, "y" * 5_000)
    session = store.get("t", "s")
    assert session is not None
    assert [(m.content or "")[:1] for m in session.messages] == ["x", "y"]


async def test_long_chats_stay_within_the_byte_budget_through_the_api(service) -> None:
    client = await service(session_max_bytes=20_000)
    for i in range(12):
        resp = await client.post("/api/v1/chat", json={"session_id": "long", "message": f"hi {i} " + "z" * 5_000})
        assert resp.status == 200
    session = client.server.app[SESSIONS].store.get("default", "long")
    assert session is not None and session.size <= 20_000
    history = await (await client.get("/api/v1/sessions/long/history")).json()
    assert history["messages"][0]["role"] == "user"
    assert history["messages"][-2]["content"].startswith("hi 11 ")


# --- the model's context and output ------------------------------------------------------------

async def test_the_model_gets_the_newest_whole_turns_that_fit_the_context_budget(service, llm: ScriptedLLM) -> None:
    client = await service(**_openai(llm, llm_context_max_chars=30_000))
    for i in range(8):
        llm.push(Reply(f"answer {i} " + "a" * 4_000))
        resp = await client.post("/api/v1/chat", json={"session_id": "ctx", "message": f"question {i} " + "q" * 4_000})
        assert resp.status == 200
    last = llm.requests[-1]["messages"]
    size = sum(len(m.get("content") or "") for m in last)
    assert size <= 30_000
    history = last[1:-1]  # between the system prompt and the new message
    assert history and history[0]["role"] == "user"  # starts at a whole turn
    assert history[-1]["content"].startswith("answer 6")  # the newest turns are the ones kept
    assert len(history) % 2 == 0
    # Without the budget the request would have carried all seven earlier turns (~56 KB).
    assert len(history) < 14


async def test_model_output_past_the_cap_ends_the_turn_and_stores_nothing(service, llm: ScriptedLLM) -> None:
    client = await service(**_openai(llm, llm_max_output_chars=2_000))
    llm.push(Reply("word " * 5_000))  # 25,000 characters
    resp = await client.post("/api/v1/chat", json={"session_id": "big", "message": "write a lot"})
    assert resp.status == 502
    body = await resp.json()
    assert_envelope(body, "model_output_too_large")
    assert "2000" in body["message"]
    assert client.server.app[SESSIONS].store.get("default", "big") is None
    # The stream version: tokens up to the cap, then one error event; the turn log holds < cap.
    llm.push(Reply("word " * 5_000))
    stream = await client.post("/api/v1/chat/stream", json={"session_id": "big", "message": "again"})
    text = await stream.text()
    events = [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: ")]
    assert events[-1]["type"] == "error" and events[-1]["error"] == "model_output_too_large"
    assert sum(len(e.get("content", "")) for e in events if e["type"] == "token") <= 2_000


async def test_output_within_the_cap_is_answered_whole(service, llm: ScriptedLLM) -> None:
    client = await service(**_openai(llm, llm_max_output_chars=2_000))
    llm.push(Reply("word " * 300))
    resp = await client.post("/api/v1/chat", json={"session_id": "ok", "message": "write some"})
    assert resp.status == 200
    assert (await resp.json())["message"] == "word " * 300


async def test_the_model_stream_is_closed_at_the_cap(service, llm: ScriptedLLM) -> None:
    """Past the cap the service stops reading the model. The scripted model holds its stream after
    1,000 words (far past the 500-character cap) until released: a service that kept reading
    would never answer."""
    client = await service(**_openai(llm, llm_max_output_chars=500))
    gate = asyncio.Event()
    llm.push(Reply("word " * 20_000, gate=gate, gate_after=1_000))
    try:
        resp = await asyncio.wait_for(client.post("/api/v1/chat", json={"session_id": "cut", "message": "go"}), 10)
        assert resp.status == 502
        assert_envelope(await resp.json(), "model_output_too_large")
    finally:
        gate.set()


def test_a_lone_surrogate_is_counted_not_refused() -> None:
    """A model can echo "\\ud800" (valid JSON, not encodable UTF-8): the turn is still stored."""
    store = SessionStore(3600, max_bytes=1_024)
    assert _commit(store, "t", "s", "repeat \ud800", "here: \ud800") == 2
    session = store.get("t", "s")
    assert session is not None and session.size == len("repeat \ud800".encode("utf-8", "surrogatepass")) * 2 - 1


def test_storable_replaces_only_lone_surrogates_and_keeps_clean_values_as_they_are() -> None:
    from msev15.store.base import storable

    steps = [{"role": "assistant", "content": None,
              "tool_calls": [{"id": "c1", "function": {"name": "f", "arguments": '{"q": "\U0001F600 ok"}'}}]}]
    assert storable(steps) is steps  # nothing to replace: the same objects, no copy
    assert storable("a\U0001F600b") == "a\U0001F600b"  # a real pair is one character, kept
    dirty = [{"role": "tool", "tool_call_id": "c1", "content": "x\ud800y\udfffz"}]
    assert storable(dirty) == [{"role": "tool", "tool_call_id": "c1", "content": "x\ufffdy\ufffdz"}]
    assert dirty[0]["content"] == "x\ud800y\udfffz"  # the caller's value is not changed
