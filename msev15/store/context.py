"""The store package's resources: the session store (with its expiry sweeper) and the orders database."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import TypedDict

from aiohttp import web

from msev15 import keys
from msev15.config import Settings
from msev15.store.base import Sessions, StoreUnavailable
from msev15.store.memory import MemorySessions
from msev15.store.orders import OrderRepository
from msev15.store.sessions import SessionStore
from msev15.store.sqlite_sessions import SqliteSessions

log = logging.getLogger("app")

SWEEP_SECONDS = 60.0


async def _sweep_sessions(store: Sessions, every: float) -> None:
    """Expire idle sessions; for the shared stores this also refreshes ``held()`` for metrics."""
    while True:
        await asyncio.sleep(every)
        try:
            dropped = await store.expire()
        except StoreUnavailable as exc:
            log.warning("Session expiry skipped: %s", exc)
            continue
        if dropped:
            log.info("Expired %d idle sessions", dropped)


class _Limits(TypedDict):
    max_messages: int
    max_sessions: int
    max_sessions_per_tenant: int
    max_bytes: int


async def open_sessions(settings: Settings) -> Sessions:
    """The session store SESSION_STORE names, with the same limits whichever it is."""
    limits: _Limits = {"max_messages": settings.session_max_messages, "max_sessions": settings.session_max_sessions,
              "max_sessions_per_tenant": settings.session_max_sessions_per_tenant,
              "max_bytes": settings.session_max_bytes}
    if settings.session_store == "memory":
        return MemorySessions(SessionStore(settings.session_ttl_seconds, **limits))
    if settings.session_store == "redis":
        from msev15.store.redis_sessions import RedisSessions

        return await RedisSessions.open(settings.redis_url, ttl_seconds=settings.session_ttl_seconds, **limits)
    if settings.session_store == "sqlite":
        return await SqliteSessions.open(settings.session_db_path, ttl_seconds=settings.session_ttl_seconds,
                                         **limits)
    raise ValueError(f"unknown SESSION_STORE {settings.session_store!r}")


async def sessions_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[keys.SETTINGS]
    store = app[keys.SESSIONS] = await open_sessions(settings)
    every = min(SWEEP_SECONDS, settings.session_ttl_seconds or SWEEP_SECONDS)
    sweeper = asyncio.create_task(_sweep_sessions(store, every), name="store:session-sweeper")
    yield
    sweeper.cancel()
    await asyncio.gather(sweeper, return_exceptions=True)
    await store.close()


async def orders_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[keys.SETTINGS]
    orders = app[keys.ORDERS] = await OrderRepository.open(settings.order_db_path, seed=settings.order_db_seed)
    yield
    await orders.close()
