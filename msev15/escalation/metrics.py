"""Prometheus metrics of the escalation service, on a registry of its own (no process globals)."""

from __future__ import annotations

# prometheus-client is a dependency of the whole distribution (the service exports metrics too).
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

CONTENT_TYPE = CONTENT_TYPE_LATEST

_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_RENDER_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25)


class Metrics:
    """The counters and histograms named in the service spec.

    - ``escalation_emails_total{use_case,status}``: sendemail calls by outcome (sent/partial/failed).
    - ``escalation_messages_total{recipient,backend,status}``: single messages (sent/failed).
    - ``escalation_email_retries_total{backend}``: attempts after the first.
    - ``escalation_email_delivery_success_rate``: delivered messages / messages tried, 0..1.
    - ``escalation_email_send_seconds{use_case}``: latency of a whole sendemail call.
    - ``escalation_template_render_seconds{template}``: template rendering time.
    - ``escalation_requests_rejected_total``: calls refused for bad input (a malformed idempotency
      key, or a key already used for other arguments, included).
    - ``escalation_emails_replayed_total``: sendemail calls answered with an earlier call's result
      because they carried its idempotency key (nothing sent again; not in ``escalation_emails_total``).
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.emails = Counter("escalation_emails", "sendemail calls by use case and outcome",
                              ["use_case", "status"], registry=r)
        self.messages = Counter("escalation_messages", "Messages by recipient role, backend and outcome",
                                ["recipient", "backend", "status"], registry=r)
        self.retries = Counter("escalation_email_retries", "Delivery attempts after the first", ["backend"],
                               registry=r)
        self.rejected = Counter("escalation_requests_rejected", "sendemail calls refused for bad input", registry=r)
        self.replayed = Counter("escalation_emails_replayed",
                                "sendemail calls answered with the result of an earlier call with the same "
                                "idempotency key", registry=r)
        self.success_rate = Gauge("escalation_email_delivery_success_rate",
                                  "Share of messages accepted for delivery (0..1; 1 before any message)", registry=r)
        self.send_seconds = Histogram("escalation_email_send_seconds", "Latency of one sendemail call",
                                      ["use_case"], buckets=_LATENCY_BUCKETS, registry=r)
        self.render_seconds = Histogram("escalation_template_render_seconds", "Template rendering time",
                                        ["template"], buckets=_RENDER_BUCKETS, registry=r)
        self._tried = 0
        self._ok = 0
        self.success_rate.set(1.0)

    def message_done(self, recipient: str, backend: str, ok: bool, attempts: int) -> None:
        self.messages.labels(recipient=recipient, backend=backend, status="sent" if ok else "failed").inc()
        if attempts > 1:
            self.retries.labels(backend=backend).inc(attempts - 1)
        self._tried += 1
        self._ok += ok
        self.success_rate.set(self._ok / self._tried)

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)
