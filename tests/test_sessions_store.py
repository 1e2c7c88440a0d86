"""The in-memory session store: isolation, ordering, paging, expiry, context trimming."""

from __future__ import annotations

from msev15.store.sessions import SessionStore


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def _commit(store: SessionStore, tenant: str, session: str, text: str = "hi", steps=()) -> int:
    return store.commit_turn(tenant, session, text, store._clock(), list(steps), f"answer to {text}")


def test_commit_and_read_back() -> None:
    store = SessionStore(3600)
    assert _commit(store, "a", "s1", "one") == 2
    assert _commit(store, "a", "s1", "two") == 4
    session = store.get("a", "s1")
    assert [(m.role, m.content) for m in session.messages] == [
        ("user", "one"), ("assistant", "answer to one"), ("user", "two"), ("assistant", "answer to two")]
    assert session.visible_count == 4


def test_tenants_are_isolated() -> None:
    store = SessionStore(3600)
    _commit(store, "a", "shared-id")
    assert store.get("b", "shared-id") is None
    assert store.delete("b", "shared-id") is None
    assert store.page("b", 50, 0).total == 0
    assert store.get("a", "shared-id") is not None


def test_page_newest_first_with_offset() -> None:
    clock = Clock()
    store = SessionStore(3600, clock)
    for i in range(5):
        clock.now += 1
        _commit(store, "t", f"s{i}")
    clock.now += 1
    _commit(store, "t", "s1")  # activity moves s1 to the front
    page = store.page("t", 2, 0)
    assert page.total == 5
    assert [s.session_id for s in page.sessions] == ["s1", "s4"]
    assert [s.session_id for s in store.page("t", 2, 2).sessions] == ["s3", "s2"]
    assert [s.session_id for s in store.page("t", 10, 4).sessions] == ["s0"]
    assert store.page("t", 10, 99).sessions == []


def test_delete_returns_visible_count() -> None:
    store = SessionStore(3600)
    _commit(store, "t", "s")
    _commit(store, "t", "s")
    assert store.delete("t", "s") == 4
    assert store.get("t", "s") is None
    assert len(store) == 0


def test_idle_sessions_expire() -> None:
    clock = Clock()
    store = SessionStore(100, clock)
    _commit(store, "t", "old")
    clock.now += 60
    _commit(store, "t", "new")
    clock.now += 50  # old idle 110 s, new idle 50 s
    assert store.get("t", "old") is None
    assert store.page("t", 50, 0).total == 1
    clock.now += 100
    assert store.expire() == 1
    assert len(store) == 0


def test_context_keeps_tool_exchange_and_trims_at_a_user_message() -> None:
    store = SessionStore(3600)
    steps = [
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "get_order_by_id", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "{\"order\": {}}"},
    ]
    _commit(store, "t", "s", "first", steps)
    _commit(store, "t", "s", "second")
    full = store.context("t", "s", 100)
    assert [m["role"] for m in full] == ["user", "assistant", "tool", "assistant", "user", "assistant"]
    assert full[1]["tool_calls"][0]["id"] == "c1" and full[2]["tool_call_id"] == "c1"
    # A window may start at the assistant's tool call (its result follows), never at a result.
    assert [m["role"] for m in store.context("t", "s", 5)] == ["assistant", "tool", "assistant", "user", "assistant"]
    assert [m["role"] for m in store.context("t", "s", 4)] == ["assistant", "user", "assistant"]
    visible = [m for m in store.get("t", "s").messages if m.visible]
    assert len(visible) == 4 and store.get("t", "s").visible_count == 4


def test_one_turn_longer_than_the_window_still_gives_context() -> None:
    store = SessionStore(3600)
    steps = []
    for i in range(6):  # six tool rounds: 12 messages in one turn
        steps.append({"role": "assistant", "content": None, "tool_calls": [
            {"id": f"c{i}", "type": "function", "function": {"name": "get_all_orders", "arguments": "{}"}}]})
        steps.append({"role": "tool", "tool_call_id": f"c{i}", "content": "{}"})
    _commit(store, "t", "s", "long one", steps)
    context = store.context("t", "s", 6)
    assert [m["role"] for m in context] == ["assistant", "tool", "assistant", "tool", "assistant"]
    assert context[-1]["content"] == "answer to long one"


def test_long_sessions_keep_their_latest_whole_turns() -> None:
    store = SessionStore(3600, max_messages=10)
    for i in range(8):
        count = _commit(store, "t", "s", f"m{i}")
    session = store.get("t", "s")
    assert len(session.messages) <= 10 and session.messages[0].role == "user"
    assert [m.content for m in session.messages if m.role == "user"] == ["m3", "m4", "m5", "m6", "m7"]
    assert count == session.visible_count == 10


def test_the_least_recently_active_session_goes_beyond_the_cap() -> None:
    clock = Clock()
    store = SessionStore(3600, clock, max_sessions=3)
    for name, tenant in (("a", "t1"), ("b", "t2"), ("c", "t1")):
        clock.now += 1
        _commit(store, tenant, name)
    clock.now += 1
    _commit(store, "t2", "b")  # b is active again; a is now the oldest
    clock.now += 1
    _commit(store, "t3", "d")
    assert len(store) == 3 and store.evicted == 1
    assert store.get("t1", "a") is None
    assert {s.session_id for s in store.page("t1", 10, 0).sessions} == {"c"}
    assert store.get("t2", "b") is not None and store.get("t3", "d") is not None


def test_expiry_across_many_tenants_pops_only_what_expired() -> None:
    clock = Clock()
    store = SessionStore(100, clock)
    for i in range(50):
        _commit(store, f"tenant-{i}", "s")
    clock.now += 50
    _commit(store, "tenant-keep", "s")
    clock.now += 60
    assert store.expire() == 50
    assert len(store) == 1 and store.get("tenant-keep", "s") is not None
    assert store._tenants.keys() == {"tenant-keep"}
