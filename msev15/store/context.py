"""The store package's resources: the session expiry sweeper, and the key of the order store.

The session store and the order store are opened by the topology (msev15.topology), which knows
which ones the settings name; this package only works through their interfaces.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from msev15.config import SETTINGS
from msev15.store.base import SESSIONS, StoreUnavailable
from msev15.store.cascade import forget_expired
from msev15.store.order_store import OrderStore

log = logging.getLogger("app")

SWEEP_SECONDS = 60.0

# Filled by the topology: SQLite at ORDER_DB_PATH, or PostgreSQL when DATABASE_URL is set.
ORDERS: web.AppKey[OrderStore] = web.AppKey("msev15.orders")


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
