"""OpenTelemetry set-up shared by the three programs, from the standard ``OTEL_*`` variables only.

Tracing is on when ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` (used as is) or
``OTEL_EXPORTER_OTLP_ENDPOINT`` (``/v1/traces`` appended) is set, and ``OTEL_SDK_DISABLED`` is
not ``true``. Without an endpoint :meth:`TelemetryConfig.from_env` returns None and nothing of the
SDK is imported or started: no tracer provider, no exporter thread, no ``traceparent`` header.

Spans go out over OTLP/HTTP (protobuf) through a batch processor. ``OTEL_SERVICE_NAME`` (default
the program's own name), ``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_TRACES_SAMPLER``/``_ARG`` and
``OTEL_EXPORTER_OTLP_HEADERS`` / ``OTEL_EXPORTER_OTLP_TRACES_HEADERS`` are read as the
specification says. ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true`` lets spans carry
message text, tool arguments and results; by default they never do (customer data).

The W3C trace context helpers live here too, so the MCP servers (which import only ``common/``
and ``mcpkit/``) read a caller's ``traceparent`` the same way the service writes it.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.sampling import Sampler

TRACES_PATH = "/v1/traces"


def _pairs(raw: str) -> tuple[tuple[str, str], ...]:
    """``key=value,key=value`` (values percent-decoded), as OTEL_RESOURCE_ATTRIBUTES and the
    OTLP headers variables are written; malformed members are skipped, as the SDK does."""
    pairs = []
    for member in raw.split(","):
        key, sep, value = member.partition("=")
        if sep and key.strip():
            pairs.append((key.strip(), unquote(value.strip())))
    return tuple(pairs)


@dataclass(frozen=True, slots=True)
class TelemetryConfig:
    endpoint: str  # the full traces URL
    service_name: str
    resource: tuple[tuple[str, str], ...] = ()
    headers: tuple[tuple[str, str], ...] = ()
    sampler: str = "parentbased_always_on"
    sampler_arg: str = ""
    capture_content: bool = False

    @classmethod
    def from_env(cls, environ: Mapping[str, str], default_service: str) -> TelemetryConfig | None:
        """None when tracing is off (no endpoint, or OTEL_SDK_DISABLED=true)."""
        if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
            return None
        endpoint = environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
        if not endpoint:
            base = environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
            if not base:
                return None
            endpoint = base.rstrip("/") + TRACES_PATH
        headers = environ.get("OTEL_EXPORTER_OTLP_TRACES_HEADERS") or environ.get("OTEL_EXPORTER_OTLP_HEADERS", "")
        capture = environ.get("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "").strip().lower() == "true"
        return cls(endpoint=endpoint,
                   service_name=environ.get("OTEL_SERVICE_NAME", "").strip() or default_service,
                   resource=_pairs(environ.get("OTEL_RESOURCE_ATTRIBUTES", "")),
                   headers=_pairs(headers),
                   sampler=environ.get("OTEL_TRACES_SAMPLER", "").strip().lower() or "parentbased_always_on",
                   sampler_arg=environ.get("OTEL_TRACES_SAMPLER_ARG", "").strip(),
                   capture_content=capture)

    def for_service(self, service_name: str) -> TelemetryConfig:
        """The same export, under another service name (a child program of ``msev15 serve``)."""
        from dataclasses import replace

        return replace(self, service_name=service_name)


def _ratio(arg: str) -> float:
    try:
        value = float(arg)
    except ValueError:
        return 1.0
    return value if 0.0 <= value <= 1.0 else 1.0


def make_sampler(name: str, arg: str) -> Sampler:
    """The sampler OTEL_TRACES_SAMPLER names (the specification's values); unknown names get the
    default, parent-based always-on."""
    from opentelemetry.sdk.trace import sampling

    samplers: dict[str, Sampler] = {
        "always_on": sampling.ALWAYS_ON,
        "always_off": sampling.ALWAYS_OFF,
        "traceidratio": sampling.TraceIdRatioBased(_ratio(arg)),
        "parentbased_always_off": sampling.ParentBased(sampling.ALWAYS_OFF),
        "parentbased_traceidratio": sampling.ParentBasedTraceIdRatio(_ratio(arg)),
    }
    return samplers.get(name, sampling.ParentBased(sampling.ALWAYS_ON))


def tracer_provider(config: TelemetryConfig) -> TracerProvider:
    """A provider exporting over OTLP/HTTP protobuf in batches (one exporter thread). Not the
    global one: each app (and each test) owns and shuts down its own."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    attributes: dict[str, Any] = dict(config.resource)
    attributes["service.name"] = config.service_name
    provider = TracerProvider(resource=Resource.create(attributes),
                              sampler=make_sampler(config.sampler, config.sampler_arg))
    exporter = OTLPSpanExporter(endpoint=config.endpoint, headers=dict(config.headers) or None)
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


def inject(carrier: MutableMapping[str, str], context: Context | None = None) -> None:
    """Write the current (or ``context``'s) span as W3C ``traceparent``/``tracestate``."""
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    TraceContextTextMapPropagator().inject(carrier, context)


def extract(carrier: Mapping[str, str]) -> Context:
    """The remote parent a W3C ``traceparent`` names (an empty context without a valid one)."""
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    return TraceContextTextMapPropagator().extract(carrier)
