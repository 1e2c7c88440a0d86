"""The store package's resources: the session expiry sweeper and the orders database.

The session store itself is opened by the topology (msev15.topology), which knows which one
SESSION_STORE names; this package only works through the ``Sessions`` interface.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from msev15.config import SETTINGS
from msev15.store.base import SESSIONS, StoreUnavailable
from msev15.store.cascade import forget_expired
from msev15.store.orders import OrderRepository

log = logging.getLogger("app")

SWEEP_SECONDS = 60.0

ORDERS: web.AppKey[OrderRepository] = web.AppKey("msev15.orders")


async def sweep_once(app: web.Application) -> int:
    """Expire idle sessions, then drop what hung on them (store/cascade.py); the sessions expired."""
    dropped = await app[SESSIONS].expire()
    await forget_expired(app)
    return dropped


async def _sweep_sessions(app: web.Application, every: float) -> None:
    """Expire idle sessions; for the shared stores this also refreshes ``held()`` for metrics."""
    while True:
        await asyncio.sleep(every)
        try:
            dropped = await sweep_once(app)
        except StoreUnavailable as exc:
            log.warning("Session expiry skipped: %s", exc)
            continue
        if dropped:
            log.info("Expired %d idle sessions", dropped)


async def sweeper_ctx(app: web.Application) -> AsyncIterator[None]:
    """Expires idle sessions of whichever store the topology opened."""
    settings = app[SETTINGS]
    every = min(SWEEP_SECONDS, settings.session_ttl_seconds or SWEEP_SECONDS)
    sweeper = asyncio.create_task(_sweep_sessions(app, every), name="store:session-sweeper")
    yield
    sweeper.cancel()
    await asyncio.gather(sweeper, return_exceptions=True)


async def orders_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    orders = app[ORDERS] = await OrderRepository.open(settings.order_db_path, seed=settings.order_db_seed)
    yield
    await orders.close()
