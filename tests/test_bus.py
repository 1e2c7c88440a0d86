"""The event bus on its own: fan-out, isolation of slow subscribers, close and drain."""

from __future__ import annotations

import asyncio

import pytest

from msev15 import keys
from msev15.events.bus import BusClosed, EventBus
from msev15.events.types import Token, TurnCompleted, TurnFailed, TurnRequested, to_wire


def _turn(turn_id: str = "t1", session: str = "s1") -> TurnRequested:
    return TurnRequested(turn_id, "tenant", session, "req", "hello")


def _token(turn_id: str = "t1", text: str = "hi") -> Token:
    return Token(turn_id, "tenant", "s1", "req", text)


def _done(turn_id: str = "t1") -> TurnCompleted:
    return TurnCompleted(turn_id, "tenant", "s1", "req", "answer", 2)


async def test_turn_subscription_gets_only_its_turn_in_order() -> None:
    bus = EventBus()
    with bus.subscribe(turn_id="t1") as mine, bus.subscribe(turn_id="t2") as other:
        for i in range(3):
            bus.publish(_token("t1", str(i)))
        bus.publish(_token("t2", "x"))
        assert [(await mine.get()).content for _ in range(3)] == ["0", "1", "2"]
        assert mine.pending() == 0
        assert (await other.get()).content == "x"


async def test_type_filter_and_global_subscription() -> None:
    bus = EventBus()
    with bus.subscribe(types=(TurnCompleted,)) as terminal_only, bus.subscribe() as everything:
        bus.publish(_turn())
        bus.publish(_token())
        bus.publish(_done())
        assert everything.pending() == 3
        assert terminal_only.pending() == 1
        assert isinstance(terminal_only.get_nowait(), TurnCompleted)


async def test_slow_subscriber_never_stalls_publisher_or_peers() -> None:
    bus = EventBus()
    slow = bus.subscribe(turn_id="t1")  # never read
    with bus.subscribe(turn_id="t1") as fast:
        for i in range(10_000):
            bus.publish(_token("t1", str(i)))  # synchronous: returns without waiting for anyone
        assert slow.pending() == 10_000
        got = [fast.get_nowait().content for _ in range(10_000)]
        assert got[-1] == "9999"
    slow.close()


async def test_unsubscribe_removes_turn_entry() -> None:
    bus = EventBus()
    sub = bus.subscribe(turn_id="t1")
    sub.close()
    sub.close()  # idempotent
    bus.publish(_token())
    assert sub.pending() == 0
    assert bus._by_turn == {}


async def test_close_refuses_new_turns_but_not_their_events() -> None:
    bus = EventBus()
    bus.publish(_turn("t1"))
    bus.close()
    with pytest.raises(BusClosed):
        bus.publish(_turn("t2"))
    bus.publish(_token("t1"))  # events of accepted turns still flow
    bus.publish(_done("t1"))
    assert bus.in_flight == 0


async def test_drain_waits_for_in_flight_turns() -> None:
    bus = EventBus()
    bus.publish(_turn("t1"))
    bus.publish(_turn("t2", "s2"))
    bus.close()
    drain = asyncio.create_task(bus.drain(5))
    await asyncio.sleep(0)
    assert not drain.done()
    bus.publish(_done("t1"))
    await asyncio.sleep(0)
    assert not drain.done()
    bus.publish(TurnFailed("t2", "tenant", "s2", "req", "llm_error", "boom", 502))
    assert await drain is True


async def test_drain_times_out_with_work_left() -> None:
    bus = EventBus()
    bus.publish(_turn())
    assert await bus.drain(0.01) is False
    assert bus.in_flight == 1


async def test_async_iteration() -> None:
    bus = EventBus()
    with bus.subscribe(turn_id="t1") as sub:
        bus.publish(_token())
        bus.publish(_done())
        seen = []
        async for event in sub:
            seen.append(type(event).__name__)
            if isinstance(event, TurnCompleted):
                break
    assert seen == ["Token", "TurnCompleted"]


def test_wire_format_type_first() -> None:
    wire = to_wire(_token())
    assert list(wire)[0] == "type" and wire == {"type": "token", "content": "hi", "session_id": "s1"}
    assert to_wire(_done()) == {"type": "done", "session_id": "s1", "message_count": 2}
    failed = to_wire(TurnFailed("t1", "tenant", "s1", "req", "llm_error", "boom", 502))
    assert failed == {"type": "error", "error": "llm_error", "message": "boom", "request_id": "req", "session_id": "s1"}
    assert to_wire(_turn()) is None


async def test_wants_tells_whether_anyone_listens() -> None:
    bus = EventBus()
    assert not bus.wants(Token, "t1")
    with bus.subscribe(turn_id="t1", types=(TurnCompleted, TurnFailed)):
        assert not bus.wants(Token, "t1")  # a plain /chat waits for the end only
        assert bus.wants(TurnCompleted, "t1")
        with bus.subscribe(turn_id="t1"):
            assert bus.wants(Token, "t1") and not bus.wants(Token, "t2")
    with bus.subscribe(types=(Token,)):
        assert bus.wants(Token, "any")


async def test_plain_chat_publishes_no_token_events(service) -> None:
    client = await service()
    bus = client.app[keys.BUS]
    before = bus.published
    resp = await client.post("/api/v1/chat", json={"session_id": "s", "message": "hello"})
    assert resp.status == 200 and len((await resp.json())["message"].split()) > 5
    assert bus.published - before == 2  # TurnRequested + TurnCompleted, no tokens


async def test_slow_reader_backlog_is_compacted() -> None:
    bus = EventBus()
    with bus.subscribe(turn_id="t1") as sub:
        for i in range(5000):
            bus.publish(_token("t1", str(i)))
        for i in range(3000):
            assert sub.get_nowait().content == str(i)
        assert sub.pending() == 2000 and len(sub._items) < 5000  # read events were dropped
        rest = [sub.get_nowait().content for _ in range(2000)]
        assert rest[0] == "3000" and rest[-1] == "4999" and sub._items == []
        with pytest.raises(IndexError):
            sub.get_nowait()
