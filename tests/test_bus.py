"""The event bus on its own: synchronous handlers, fan-out, isolation of slow subscribers."""

from __future__ import annotations

import asyncio

import pytest

from msev15.events.bus import EventBus
from msev15.events.context import BUS
from msev15.events.types import Token, ToolCalled, TurnCompleted, TurnFailed, TurnRequested, to_wire


def _turn(turn_id: str = "t1", session: str = "s1") -> TurnRequested:
    return TurnRequested(turn_id, "tenant", session, "req", "hello")


def _token(turn_id: str = "t1", text: str = "hi") -> Token:
    return Token(turn_id, "tenant", "s1", "req", text)


def _done(turn_id: str = "t1") -> TurnCompleted:
    return TurnCompleted(turn_id, "tenant", "s1", "req", "answer", 2)


async def test_handler_runs_inside_publish_and_can_refuse() -> None:
    bus = EventBus()
    taken: list[str] = []

    def take(turn: TurnRequested) -> None:
        if turn.session_id == "full":
            raise RuntimeError("refused")
        taken.append(turn.turn_id)

    bus.on(TurnRequested, take)
    with bus.subscribe((TurnRequested,)) as sub:
        bus.publish(_turn("t1"))
        assert taken == ["t1"]  # before publish returned: no task in between
        with pytest.raises(RuntimeError, match="refused"):
            bus.publish(_turn("t2", session="full"))
        assert sub.pending() == 1  # a refused event goes no further
        bus.publish(_token())  # other kinds never reach the handler
        assert taken == ["t1"]


async def test_kind_filter_and_order() -> None:
    bus = EventBus()
    with bus.subscribe((Token,)) as tokens, bus.subscribe((TurnCompleted, TurnFailed)) as ends:
        for i in range(3):
            bus.publish(_token(text=str(i)))
        bus.publish(_done())
        assert [tokens.get_nowait().content for _ in range(3)] == ["0", "1", "2"]
        assert tokens.pending() == 0
        assert await ends.get() == _done()


async def test_slow_subscriber_never_stalls_publisher_or_peers() -> None:
    bus = EventBus()
    with bus.subscribe((Token,)) as slow, bus.subscribe((Token,)) as fast:
        received: list[str] = []

        async def read_fast() -> None:
            while len(received) < 1000:
                received.append((await fast.get()).content)

        reader = asyncio.create_task(read_fast())
        for i in range(1000):
            bus.publish(_token(text=str(i)))  # synchronous: never waits for a reader
        await asyncio.wait_for(reader, 5)
        assert received == [str(i) for i in range(1000)]
        assert slow.pending() == 1000  # nobody read it; the publisher did not wait for it


async def test_get_waits_for_the_next_event() -> None:
    bus = EventBus()
    with bus.subscribe((Token,)) as sub:
        waiting = asyncio.create_task(sub.get())
        await asyncio.sleep(0)
        assert not waiting.done()
        bus.publish(_token(text="late"))
        assert (await asyncio.wait_for(waiting, 5)).content == "late"


async def test_closed_subscription_gets_nothing_more() -> None:
    bus = EventBus()
    sub = bus.subscribe((Token,))
    bus.publish(_token())
    sub.close()
    sub.close()  # idempotent
    bus.publish(_token())
    assert sub.pending() == 1 and sub.closed


def test_wire_format_type_first_and_terminal_events_carry_the_turn() -> None:
    assert list(to_wire(_token())) == ["type", "content", "session_id"]
    done = to_wire(_done())
    assert next(iter(done)) == "type" and done["turn_id"] == "t1"
    failed = to_wire(TurnFailed("t9", "tenant", "s1", "req", "cancelled", "stopped", 409))
    assert failed == {"type": "error", "error": "cancelled", "message": "stopped", "request_id": "req",
                      "session_id": "s1", "turn_id": "t9"}
    call = to_wire(ToolCalled("t1", "tenant", "s1", "req", "get_order_by_id", "c1", {"id": 1}))
    assert call["type"] == "tool_call" and call["arguments"] == {"id": 1}
    with pytest.raises(TypeError):
        to_wire(_turn())


async def test_plain_chat_publishes_no_token_events(service) -> None:
    client = await service()
    bus = client.app[BUS]
    before = bus.published
    resp = await client.post("/api/v1/chat", json={"session_id": "s", "message": "hello"})
    assert resp.status == 200 and len((await resp.json())["message"].split()) > 5
    assert bus.published - before == 2  # TurnRequested + TurnCompleted, no tokens


async def test_slow_reader_backlog_is_compacted() -> None:
    bus = EventBus()
    with bus.subscribe((Token,)) as sub:
        for i in range(5000):
            bus.publish(_token(text=str(i)))
        for i in range(3000):
            assert sub.get_nowait().content == str(i)
        assert sub.pending() == 2000 and sub.backlog() < 5000  # read events were dropped
        rest = [sub.get_nowait().content for _ in range(2000)]
        assert rest[0] == "3000" and rest[-1] == "4999" and sub.backlog() == 0
        with pytest.raises(IndexError):
            sub.get_nowait()
