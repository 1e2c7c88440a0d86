"""The events package's resources: the bus with its logging subscriber, and the turn log."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from msev15 import keys
from msev15.events.bus import EventBus
from msev15.events.logsub import LoggingSubscriber
from msev15.events.metrics import MetricsSubscriber
from msev15.events.turnlog import TurnLog


async def events_ctx(app: web.Application) -> AsyncIterator[None]:
    """First to start, last to stop: every event published during shutdown is still logged."""
    settings = app[keys.SETTINGS]
    bus = app[keys.BUS] = EventBus()
    app[keys.TURNS] = TurnLog(settings.stream_retention_seconds, settings.stream_max_retained_events)
    subscriber = LoggingSubscriber(bus)
    subscriber.start()
    metrics = MetricsSubscriber(bus, app[keys.METRICS])
    metrics.start()
    yield
    await metrics.close()
    await subscriber.close()
