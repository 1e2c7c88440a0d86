"""The service's tracing: one tracer provider per app, on only when an OTLP endpoint is configured.

:class:`Tracing` is made in ``create_app`` from :class:`msev15.common.telemetry.TelemetryConfig`
(None: tracing off, and then nothing here is made at all). ``tracing_ctx`` starts it first and
stops it last, so the spans of a turn cut at shutdown are still exported. While it runs, every log
line written inside a span carries ``trace_id`` and ``span_id`` (:class:`TraceLogFilter`).

The spans themselves are made by the HTTP middleware (handlers/tracing.py) and the agent's
instrumentation (agent/tracing.py); this module only owns the provider and its lifecycle, so
neither the handlers nor the agent import the SDK when tracing is off.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from aiohttp import web

from msev15.common.telemetry import TelemetryConfig, tracer_provider
from msev15.logs.writer import add_log_filter, remove_log_filter

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import SpanContext, Tracer

log = logging.getLogger("app")

INSTRUMENTATION = "msev15"


RECENT_TURNS = 4096  # turns whose span the log filter still finds (their lines are written a little later)


class TraceLogFilter(logging.Filter):
    """Adds `` | trace_id=… span_id=…`` to lines written inside a span, and to the turn lines the
    logging subscriber writes afterwards (``extra={"turn": …}``), with that turn's span."""

    def __init__(self) -> None:
        super().__init__()
        self.turns: OrderedDict[str, SpanContext] = OrderedDict()

    def remember(self, turn_id: str, context: SpanContext) -> None:
        turns = self.turns
        turns[turn_id] = context
        turns.move_to_end(turn_id)
        if len(turns) > RECENT_TURNS:
            turns.popitem(last=False)

    def filter(self, record: logging.LogRecord) -> bool:
        from opentelemetry import trace

        context: SpanContext | None = trace.get_current_span().get_span_context()
        if context is None or not context.is_valid:
            turn = getattr(record, "turn", None)
            context = self.turns.get(turn) if isinstance(turn, str) else None
        if context is not None and context.is_valid:
            record.trace = f" | trace_id={context.trace_id:032x} span_id={context.span_id:016x}"
        return True


class Tracing:
    """The app's tracer provider. Constructing it does nothing; :meth:`start` builds the provider
    and its exporter thread, :meth:`close` flushes and stops them."""

    def __init__(self, config: TelemetryConfig) -> None:
        self.config = config
        self.capture_content = config.capture_content
        self._provider: TracerProvider | None = None
        self._tracer: Tracer | None = None
        self.log_filter = TraceLogFilter()

    @property
    def tracer(self) -> Tracer:
        assert self._tracer is not None, "tracing is not started"
        return self._tracer

    def start(self) -> None:
        from msev15 import __version__

        self._provider = tracer_provider(self.config)
        self._tracer = self._provider.get_tracer(INSTRUMENTATION, __version__)
        add_log_filter(self.log_filter)
        log.info("Tracing on: OTLP/HTTP to %s as %s", self.config.endpoint, self.config.service_name)

    def flush(self, timeout_millis: int = 10_000) -> bool:
        """Export every ended span now (tests, and the last step of shutdown)."""
        return self._provider.force_flush(timeout_millis) if self._provider is not None else True

    def close(self) -> None:
        remove_log_filter(self.log_filter)
        if self._provider is not None:
            self._provider.shutdown()  # flushes, then stops the exporter thread
            self._provider = None


TRACING: web.AppKey[Tracing] = web.AppKey("msev15.tracing")


async def tracing_ctx(app: web.Application) -> AsyncIterator[None]:
    """First to start, last to stop (only present when tracing is on)."""
    tracing = app[TRACING]
    tracing.start()
    try:
        yield
    finally:
        tracing.close()
