"""The events package's resources: the bus with its logging subscriber, and the turn log."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from msev15 import keys
from msev15.common.ids import new_id
from msev15.events.bus import EventBus
from msev15.events.logsub import LoggingSubscriber
from msev15.events.metrics import MetricsSubscriber
from msev15.events.turnlog import TurnLog


async def events_ctx(app: web.Application) -> AsyncIterator[None]:
    """First to start, last to stop: every event published during shutdown is still logged."""
    settings = app[keys.SETTINGS]
    bus = app[keys.BUS] = EventBus()
    turns: TurnLog
    if settings.session_store == "redis":
        from msev15.events.redis_turnlog import RedisTurnLog

        shared = RedisTurnLog(settings.redis_url, new_id(), settings.stream_retention_seconds,
                              settings.stream_max_retained_events)
        shared.start()
        turns = shared
    else:
        turns = TurnLog(settings.stream_retention_seconds, settings.stream_max_retained_events)
    app[keys.TURNS] = turns
    subscriber = LoggingSubscriber(bus)
    subscriber.start()
    metrics = MetricsSubscriber(bus, app[keys.METRICS])
    yield
    metrics.close()
    await subscriber.close()
    await turns.close()
