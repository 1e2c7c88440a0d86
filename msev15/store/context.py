"""The store package's resources: the session store (with its expiry sweeper) and the orders database."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from msev15 import keys
from msev15.store.orders import OrderRepository
from msev15.store.sessions import SessionStore

log = logging.getLogger("app")

SWEEP_SECONDS = 60.0


async def _sweep_sessions(store: SessionStore) -> None:
    while True:
        await asyncio.sleep(min(SWEEP_SECONDS, store.ttl))
        dropped = store.expire()
        if dropped:
            log.info("Expired %d idle sessions", dropped)


async def sessions_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[keys.SETTINGS]
    store = app[keys.SESSIONS] = SessionStore(settings.session_ttl_seconds,
                                              max_messages=settings.session_max_messages,
                                              max_sessions=settings.session_max_sessions,
                                              max_sessions_per_tenant=settings.session_max_sessions_per_tenant,
                                              max_bytes=settings.session_max_bytes)
    sweeper = asyncio.create_task(_sweep_sessions(store), name="store:session-sweeper")
    yield
    sweeper.cancel()
    await asyncio.gather(sweeper, return_exceptions=True)


async def orders_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[keys.SETTINGS]
    orders = app[keys.ORDERS] = await OrderRepository.open(settings.order_db_path, seed=settings.order_db_seed)
    yield
    await orders.close()
