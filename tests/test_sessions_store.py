"""Internals of the in-memory session store only; its behaviour is the contract that
tests/test_session_stores.py checks for every store."""

from __future__ import annotations

from msev15.store.sessions import SessionStore


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def _commit(store: SessionStore, tenant: str, session: str, text: str = "hi") -> int:
    return store.commit_turn(tenant, session, text, store._clock(), [], f"answer to {text}")


def test_eviction_is_counted_and_leaves_no_empty_tenant() -> None:
    clock = Clock()
    store = SessionStore(3600, clock, max_sessions=2)
    for name, tenant in (("a", "t1"), ("b", "t2"), ("c", "t3")):
        clock.now += 1
        _commit(store, tenant, name)
    assert store.evicted == 1 and len(store) == 2
    assert store._tenants.keys() == {"t2", "t3"}


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
