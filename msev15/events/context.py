"""The events package's resources: the bus with its logging and metrics subscribers.

The turn log is the topology's (msev15.topology): in process, or shared through Redis.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from msev15.events.bus import EventBus
from msev15.events.metrics import METRICS, MetricsSubscriber
from msev15.logs.subscriber import LoggingSubscriber

BUS: web.AppKey[EventBus] = web.AppKey("msev15.bus")


async def events_ctx(app: web.Application) -> AsyncIterator[None]:
    """First to start, last to stop: every event published during shutdown is still logged."""
    bus = app[BUS] = EventBus()
    subscriber = LoggingSubscriber(bus)
    subscriber.start()
    metrics = MetricsSubscriber(bus, app[METRICS])
    yield
    metrics.close()
    await subscriber.close()
