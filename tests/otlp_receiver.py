"""A real OTLP/HTTP trace receiver on loopback: protobuf decoded with opentelemetry-proto.

It runs in its own thread (the standard library's HTTP server), not on the test's event loop:
the SDK's exporter posts from its own thread, and a flush or a shutdown called on the loop must
not wait on a receiver that the same loop would have to serve.
"""

from __future__ import annotations

import gzip
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from msev15.common.telemetry import TelemetryConfig

KINDS = {0: "UNSPECIFIED", 1: "INTERNAL", 2: "SERVER", 3: "CLIENT", 4: "PRODUCER", 5: "CONSUMER"}
STATUS = {0: "UNSET", 1: "OK", 2: "ERROR"}


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_value(v) for v in value.array_value.values]
    return getattr(value, kind) if kind else None


@dataclass
class ReceivedSpan:
    service: str
    name: str
    kind: str
    trace_id: str
    span_id: str
    parent_id: str  # "" for a root
    status: str
    attributes: dict[str, Any] = field(default_factory=dict)
    events: list[str] = field(default_factory=list)
    links: list[str] = field(default_factory=list)  # linked span ids


class OtlpReceiver:
    def __init__(self) -> None:
        self.spans: list[ReceivedSpan] = []
        self.paths: list[str] = []
        self._changed = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                receiver._take(self.path, self.headers.get("Content-Type", ""), body)
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="otlp-receiver", daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def config(self, service: str = "msev15", **more: str) -> TelemetryConfig:
        """The telemetry of a process whose OTEL_* variables point here."""
        environ = {"OTEL_EXPORTER_OTLP_ENDPOINT": self.endpoint, **more}
        config = TelemetryConfig.from_env(environ, service)
        assert config is not None
        return config

    def _take(self, path: str, content_type: str, body: bytes) -> None:
        assert content_type == "application/x-protobuf", content_type
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        spans = []
        for resource_spans in request.resource_spans:
            resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    spans.append(ReceivedSpan(
                        service=str(resource.get("service.name")), name=span.name, kind=KINDS[span.kind],
                        trace_id=span.trace_id.hex(), span_id=span.span_id.hex(), parent_id=span.parent_span_id.hex(),
                        status=STATUS[span.status.code],
                        attributes={a.key: _value(a.value) for a in span.attributes},
                        events=[e.name for e in span.events], links=[link.span_id.hex() for link in span.links]))
        with self._changed:
            self.paths.append(path)
            self.spans.extend(spans)
            self._changed.notify_all()

    def named(self, name: str) -> list[ReceivedSpan]:
        return [s for s in self.spans if s.name == name]

    def one(self, name: str) -> ReceivedSpan:
        found = self.named(name)
        assert len(found) == 1, f"{len(found)} spans named {name!r}: {[s.name for s in self.spans]}"
        return found[0]

    def wait_for(self, *names: str, timeout: float = 10.0) -> None:
        """Until a span of each name has arrived (bounded; called from a thread or after a flush)."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not all(self.named(n) for n in names):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"spans {names} not all received: {[s.name for s in self.spans]}")
                self._changed.wait(left)

    def __enter__(self) -> OtlpReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
