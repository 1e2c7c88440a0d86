"""The turn log and the fair scheduler on their own."""

from __future__ import annotations

import asyncio

import pytest

from msev15.agent.scheduler import FairScheduler, QueueFull
from msev15.events.turnlog import TurnLog
from msev15.events.types import Token, TurnCompleted, TurnFailed, TurnRequested


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _turn(turn_id: str, tenant: str = "t", session: str = "s") -> TurnRequested:
    return TurnRequested(turn_id, tenant, session, "req", "hello", True)


def _run(log: TurnLog, turn_id: str, tokens: int, tenant: str = "t", session: str = "s") -> None:
    record = log.open(_turn(turn_id, tenant, session))
    for i in range(tokens):
        log.append(record, Token(turn_id, tenant, session, "req", str(i)))
    log.append(record, TurnCompleted(turn_id, tenant, session, "req", "answer", 2))


async def test_seq_numbers_and_status() -> None:
    log = TurnLog(300, 1000)
    record = log.open(_turn("a"))
    assert (record.status, record.last_seq) == ("queued", 0)
    assert log.append(record, Token("a", "t", "s", "req", "x")) == 1
    assert log.append(record, TurnFailed("a", "t", "s", "req", "interrupted", "newer message", 409)) == 2
    assert record.finished and record.status == "interrupted" and record.error == "interrupted"
    with pytest.raises(RuntimeError):
        log.append(record, Token("a", "t", "s", "req", "late"))


async def test_get_is_scoped_to_tenant_and_session() -> None:
    log = TurnLog(300, 1000)
    _run(log, "a", 1, tenant="t1", session="s1")
    assert log.get("t1", "s1", "a") is not None
    assert log.get("t2", "s1", "a") is None and log.get("t1", "s2", "a") is None and log.get("t1", "s1", "b") is None


async def test_a_task_lookup_by_turn_id_is_scoped_to_the_tenant_and_the_retention() -> None:
    """What A2A reads: a turn by its id alone, and the tenant's turns in opening order."""
    clock = Clock()
    log = TurnLog(300, 1000, clock=clock)
    _run(log, "a", 1, tenant="t1", session="s1")
    _run(log, "b", 1, tenant="t2", session="s1")
    _run(log, "c", 1, tenant="t1", session="s2")
    found = await log.find_task("t1", "a")
    assert found is not None and found.session_id == "s1"
    assert await log.find_task("t2", "a") is None and await log.find_task("t1", "zz") is None
    assert [r.turn_id for r in log.retained("t1")] == ["a", "c"]
    clock.now += 301
    assert await log.find_task("t1", "a") is None and log.retained("t1") == []


async def test_readers_wait_for_new_events_and_the_end() -> None:
    log = TurnLog(300, 1000)
    record = log.open(_turn("a"))
    waiting = asyncio.create_task(record.wait(0))
    await asyncio.sleep(0)
    assert not waiting.done()
    log.append(record, Token("a", "t", "s", "req", "x"))
    await asyncio.wait_for(waiting, 5)
    ending = asyncio.create_task(record.outcome())
    cancelled = asyncio.create_task(record.wait(1))
    await asyncio.sleep(0)
    cancelled.cancel()  # a reader that goes away leaves no waiter behind
    log.append(record, TurnCompleted("a", "t", "s", "req", "answer", 2))
    assert (await asyncio.wait_for(ending, 5)).message == "answer"
    await record.wait(99)  # an ended turn never blocks a reader


async def test_finished_turns_expire_after_the_retention() -> None:
    clock = Clock()
    log = TurnLog(300, 1000, clock=clock)
    _run(log, "old", 2)
    clock.now += 200
    _run(log, "new", 2)
    record = log.open(_turn("running"))
    clock.now += 101
    assert log.get("t", "s", "old") is None
    assert log.get("t", "s", "new") is not None
    clock.now += 10_000
    assert log.get("t", "s", "new") is None
    assert log.get("t", "s", "running") is record  # running turns are never dropped
    assert log.retained_events == 0


async def test_retained_events_stay_within_the_bound_oldest_first() -> None:
    log = TurnLog(300, 100)
    for i in range(50):
        _run(log, f"turn{i}", 9)  # 10 events each
    assert log.retained_events <= 100
    kept = [i for i in range(50) if log.get("t", "s", f"turn{i}") is not None]
    assert kept == list(range(40, 50))
    assert log.evicted == 40


def test_scheduler_is_fair_between_tenants() -> None:
    sched: FairScheduler[str] = FairScheduler(max_running=1, max_running_per_tenant=1, max_queued_per_tenant=100)
    for i in range(5):
        sched.push(("flood", f"s{i}"), f"flood-{i}")
    sched.push(("victim", "v"), "victim-0")
    order = []
    while (item := sched.next()) is not None:
        order.append(item[1])
        sched.done(item[0])
    assert order[:2] == ["flood-0", "victim-0"]  # the victim waits for one turn, not five
    assert order[2:] == ["flood-1", "flood-2", "flood-3", "flood-4"]


def test_scheduler_runs_a_session_one_turn_at_a_time_in_order() -> None:
    sched: FairScheduler[str] = FairScheduler(max_running=10, max_running_per_tenant=10, max_queued_per_tenant=10)
    for i in range(3):
        sched.push(("t", "s"), f"m{i}")
    first = sched.next()
    assert first == (("t", "s"), "m0") and sched.next() is None and sched.busy(("t", "s"))
    sched.done(("t", "s"))
    assert sched.next() == (("t", "s"), "m1")


def test_scheduler_limits_per_tenant_and_queue() -> None:
    sched: FairScheduler[str] = FairScheduler(max_running=10, max_running_per_tenant=2, max_queued_per_tenant=3)
    for i in range(3):
        sched.push(("a", f"s{i}"), f"a{i}")
    with pytest.raises(QueueFull):
        sched.push(("a", "s9"), "a9")
    sched.push(("b", "s0"), "b0")
    started = [sched.next(), sched.next(), sched.next(), sched.next()]
    assert [s[1] for s in started if s] == ["a0", "b0", "a1"]  # a third of tenant a must wait
    assert sched.tenant_load("a") == (2, 1)
    sched.push(("a", "s9"), "a9")  # room in the queue again
    sched.done(("a", "s0"))
    assert sched.next() == (("a", "s2"), "a2")


def test_scheduler_remove_a_waiting_turn() -> None:
    sched: FairScheduler[str] = FairScheduler(max_running=1, max_running_per_tenant=1, max_queued_per_tenant=10)
    sched.push(("a", "s"), "a0")
    sched.push(("a", "s"), "a1")
    sched.push(("b", "s"), "b0")
    assert sched.next() == (("a", "s"), "a0")
    assert sched.remove(("b", "s"), "b0") and not sched.remove(("b", "s"), "b0")
    assert sched.remove(("a", "s"), "a1")
    assert sched.queued == 0
    sched.done(("a", "s"))
    assert sched.next() is None and sched.running == 0
    assert sched.tenant_load("a") == (0, 0) and sched.tenant_load("b") == (0, 0)
