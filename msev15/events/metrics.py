"""Prometheus metrics of the service, in a registry of its own per app (tests build many apps).

Three sources, each as cheap as it can be on its path:

- the bus: a synchronous handler counts turn ends and tool results (never tokens: a turn's token
  counts arrive once, in its terminal event's usage, so the per-token path pays nothing);
- the HTTP middleware (handlers/metrics.py): one counter and one histogram per request, labelled
  by route template (``/api/v1/sessions/{session_id}/history``), never the raw path;
- gauges read at scrape time from their owners (runner, sessions, MCP connections, the
  connection guard), by a custom collector: nothing to keep in step.

Per-tenant labels only with METRICS_TENANT_LABELS=true, and then at most METRICS_MAX_TENANTS
distinct tenants; the rest are counted as ``other``, so a tenant flood cannot grow the series.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from msev15.events.bus import EventBus
from msev15.events.tally import Tally, TallyCollector, TallyHistogram
from msev15.events.types import CallSettled, InputRequired, ToolFinished, TurnCompleted, TurnEvent, TurnFailed

log = logging.getLogger("app.metrics")

OTHER = "other"
TURN_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300)
TTFT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30)
DECISION_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 900, 1800, 3600, 4 * 3600, 12 * 3600, 86400)
HTTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
STOPPED = frozenset({"cancelled", "interrupted", "shutting_down"})


class TenantLabels:
    """The tenant label: the first ``limit`` tenants by name, every later one as ``other``."""

    def __init__(self, enabled: bool, limit: int) -> None:
        self.enabled = enabled
        self.limit = limit
        self._known: set[str] = set()

    def __call__(self, tenant_id: str) -> str:
        if tenant_id in self._known:
            return tenant_id
        if len(self._known) < self.limit:
            self._known.add(tenant_id)
            return tenant_id
        return OTHER


HANDOFF_BUCKETS = (5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)


class ServiceMetrics:
    def __init__(self, *, tenant_labels: bool = False, max_tenants: int = 50) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.tenant = TenantLabels(tenant_labels, max_tenants)
        t: tuple[str, ...] = ("tenant",) if tenant_labels else ()
        self.http_requests = Tally("msev15_http_requests", "HTTP requests by route template, method and status.",
                                   ("route", "method", "status"))
        self.http_duration = TallyHistogram("msev15_http_request_duration_seconds", "HTTP request duration.",
                                            ("route", "method"), HTTP_BUCKETS)
        self.turns = Tally("msev15_turns", "Turns ended, by outcome (completed, failed, cancelled, ...).",
                           ("outcome", *t))
        self.turn_duration = TallyHistogram("msev15_turn_duration_seconds",
                                            "Turn duration from acceptance to its end.", t, TURN_BUCKETS)
        self.ttft = TallyHistogram("msev15_time_to_first_token_seconds", "Time from acceptance to the first token.",
                                   t, TTFT_BUCKETS)
        self.tokens = Tally("msev15_tokens", "Model tokens by kind (prompt, completion).", ("kind", *t))
        self.tool_calls = Tally("msev15_tool_calls", "Tool calls by tool and outcome (ok, error).", ("tool", "outcome"))
        self.rate_limited = Tally("msev15_rate_limited", "Requests refused by a rate limit, by scope (ip, tenant).",
                                  ("scope",))
        self.approvals = Tally("msev15_approvals", "Tool calls that waited for approval, by tool and outcome "
                               "(requested, approved, rejected, expired, superseded, cancelled).", ("tool", "outcome"))
        self.decision_time = TallyHistogram("msev15_approval_decision_seconds",
                                            "Time from an approval's request to a person's decision.", ("tool",),
                                            DECISION_BUCKETS)
        self.feedback = Tally("msev15_feedback", "Answer ratings received, by rating (up, down).", ("rating",))
        for rating in ("up", "down"):  # both series from the start: a rate of thumbs down needs its zero
            self.feedback.inc((rating,), 0)
        # Human handoff (agent/handoff.py, agent/handoff_timeout.py).
        self.handoffs = Tally("msev15_handoffs", "Handoffs to a person by outcome (claimed, ticketed, released).",
                              ("outcome",))
        self.handoff_wait = TallyHistogram("msev15_handoff_wait_seconds", "Seconds a handoff waited for a claim.",
                                           (), HANDOFF_BUCKETS)
        self.handoff_with_human = TallyHistogram("msev15_handoff_with_human_seconds",
                                                 "Seconds an operator held a conversation (claim to release).", (),
                                                 HANDOFF_BUCKETS)
        self.registry.register(TallyCollector((self.http_requests, self.http_duration, self.turns, self.turn_duration,
                                               self.ttft, self.tokens, self.tool_calls, self.rate_limited,
                                               self.approvals, self.decision_time, self.feedback, self.handoffs,
                                               self.handoff_wait, self.handoff_with_human)))
        self._tools: set[str] = set()
        self.open_streams = [0]  # a plain int in a list: the HTTP middleware bumps it, a gauge reads it

    # --- the bus subscriber ---------------------------------------------------------------

    def observe(self, event: TurnEvent) -> None:
        match event:
            case ToolFinished():
                self.tool_calls.inc((self._tool(event.name), "ok" if event.ok else "error"))
            case InputRequired(kind="approval"):
                self.approvals.inc((self._tool(event.name), "requested"))
            case CallSettled(kind="approval"):
                tool = self._tool(event.name)
                self.approvals.inc((tool, event.outcome))
                if event.waited is not None:
                    self.decision_time.observe(event.waited, (tool,))
            case TurnCompleted() | TurnFailed():
                t = (self.tenant(event.tenant_id),) if self.tenant.enabled else ()
                if isinstance(event, TurnCompleted):
                    outcome = "completed"
                else:
                    outcome = event.error if event.error in STOPPED else "failed"
                self.turns.inc((outcome, *t))
                if event.elapsed:
                    self.turn_duration.observe(event.elapsed, t)
                if event.ttft is not None:
                    self.ttft.observe(event.ttft, t)
                usage = event.usage if isinstance(event, TurnCompleted) else None
                if usage:
                    for kind in ("prompt", "completion"):
                        if count := usage.get(f"{kind}_tokens"):
                            self.tokens.inc((kind, *t), count)

    def _tool(self, name: str) -> str:
        """Tool names come from our registry and MCP servers: bounded, but capped all the same."""
        if name in self._tools or len(self._tools) < 200:
            self._tools.add(name)
            return name
        return OTHER

    def gauges(self, read: Callable[[], Iterable[tuple[str, str, dict[str, str], float]]]) -> None:
        """Add gauges read at scrape time: ``read`` yields (name, help, labels, value)."""
        self.registry.register(_ReadCollector(read))


class _ReadCollector(Collector):
    def __init__(self, read: Callable[[], Iterable[tuple[str, str, dict[str, str], float]]]) -> None:
        self._read = read

    def collect(self) -> Iterable[Any]:
        families: dict[str, GaugeMetricFamily | CounterMetricFamily] = {}
        for name, help_text, labels, value in self._read():
            family = families.get(name)
            if family is None:
                kind = CounterMetricFamily if name.endswith("_total") else GaugeMetricFamily
                family = families[name] = kind(name.removesuffix("_total") if kind is CounterMetricFamily else name,
                                               help_text, labels=list(labels))
            family.add_metric(list(labels.values()), value)
        return list(families.values())

    def describe(self) -> Iterable[Any]:
        return []


class MetricsSubscriber:
    """Counts turn ends and tool results as they are published. A synchronous bus handler: counting
    is as cheap as queueing would be, so there is no queue and no task, and nothing to drain at
    shutdown. A failure here is logged, never raised into the publisher (the runner)."""

    KINDS = (ToolFinished, InputRequired, CallSettled, TurnCompleted, TurnFailed)

    def __init__(self, bus: EventBus, metrics: ServiceMetrics) -> None:
        self._metrics = metrics
        self.closed = False
        for kind in self.KINDS:
            bus.on(kind, self._observe)

    def _observe(self, event: TurnEvent) -> None:
        if self.closed:
            return
        try:
            self._metrics.observe(event)
        except Exception:
            log.exception("could not count a %s event", type(event).__name__)

    def close(self) -> None:
        self.closed = True


# Made by create_app before any request (the middlewares count into it), read by every package.
METRICS: web.AppKey[ServiceMetrics] = web.AppKey("msev15.metrics")
