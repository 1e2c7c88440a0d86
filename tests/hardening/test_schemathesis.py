"""Schemathesis against ``/openapi.json`` of the running service.

Every operation gets a bounded number of generated requests, valid ones and (where the operation
takes input) invalid ones, derandomized so a run is repeatable. schemathesis' built-in checks all
run (they are enabled by default): no 5xx; a documented status, content type, headers and schema;
invalid data refused and valid data accepted. On top of those, each response must: carry
``X-Request-ID``, use the error envelope for every 4xx/5xx, and send a stream whose events each
match the documented ``StreamEvent`` and end with exactly one ``done`` or ``error``.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.core.failures import FailureGroup

from tests.conftest import make_settings
from tests.hardening.live import LiveService, live_service
from tests.hardening.sse import data_events

MAX_EXAMPLES = 40
REQUEST_TIMEOUT = 15.0
SESSION_STREAM = "/api/v1/sessions/{session_id}/events"  # tests/test_session_stream.py
ENVELOPE = ("error", "message", "request_id", "timestamp")
TERMINAL = ("done", "error")

_CONFIG = {"max-stream-events": 10_000, "request-timeout": REQUEST_TIMEOUT}


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveService]:
    tmp: Path = tmp_path_factory.mktemp("schemathesis")
    with live_service(make_settings(tmp)) as running:
        yield running


@pytest.fixture(scope="module")
def schema(live: LiveService) -> Any:
    return schemathesis.openapi.from_url(f"{live.url}/openapi.json",
                                         config=schemathesis.Config.from_dict(_CONFIG))


# The event schema and terminal event types of each stream, by path (the REST streams otherwise).
_PROTOCOL_STREAMS = {
    "/api/v1/ag-ui": ("AgUiEvent", ("RUN_FINISHED", "RUN_ERROR")),
    "/api/v1/ai-sdk/chat": ("AiSdkPart", ("finish", "error")),
    "/api/v1/ai-sdk/chat/{id}/stream": ("AiSdkPart", ("finish", "error")),
}


def _stream_event_validator(schema: Any, name: str = "StreamEvent") -> jsonschema.protocols.Validator:
    spec = schema.raw_schema
    return jsonschema.Draft4Validator({"$ref": f"#/components/schemas/{name}", "components": spec["components"]})


def _service_checks(events: jsonschema.protocols.Validator, seen: Counter[tuple[str, int]],
                    protocols: dict[str, jsonschema.protocols.Validator] | None = None) -> Any:
    def service_contract(ctx: Any, response: Any, case: Any) -> None:
        """The parts of the contract the OpenAPI document cannot say."""
        seen[case.operation.label, response.status_code] += 1
        assert response.headers.get("x-request-id"), "every response carries X-Request-ID"
        content_type = (response.headers.get("content-type") or [""])[0]
        if response.status_code >= 400:
            assert content_type.startswith("application/json"), f"error without JSON body: {content_type}"
            body = json.loads(response.content)
            missing = [key for key in ENVELOPE if not body.get(key)]
            assert not missing, f"error envelope lacks {missing}: {body}"
            assert body["request_id"] == response.headers["x-request-id"][0]
        elif content_type.startswith("text/event-stream"):
            text = response.content.decode()
            validator, terminal = events, TERMINAL
            if case.operation.path in _PROTOCOL_STREAMS:
                name, terminal = _PROTOCOL_STREAMS[case.operation.path]
                validator = (protocols or {})[name]
                if name == "AiSdkPart" and not response.stream_cut_short:
                    assert text.rstrip().endswith("data: [DONE]"), "an AI SDK stream ends with data: [DONE]"
                text = text.replace("data: [DONE]", "")
            data = data_events(text)
            for event in data:
                validator.validate(event)
            if not response.stream_cut_short:
                kinds = [event["type"] for event in data]
                assert kinds and kinds[-1] in terminal, f"stream does not end with {terminal}: {kinds[-3:]}"
                assert sum(kind in terminal for kind in kinds) == 1, f"more than one terminal event: {kinds}"

    return service_contract


def _takes_input(operation: Any) -> bool:
    return bool(len(operation.query) or len(operation.path_parameters) or operation.body)


def _run(operation: Any, mode: GenerationMode, base_url: str, check: Any) -> str | None:
    """Generate and send ``MAX_EXAMPLES`` cases; the first failure report, or None."""

    @settings(max_examples=MAX_EXAMPLES, derandomize=True, database=None, deadline=None,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: Any) -> None:
        case.call_and_validate(base_url=base_url, additional_checks=[check], timeout=REQUEST_TIMEOUT)

    try:
        run()
    except (FailureGroup, AssertionError) as exc:
        return f"{operation.label} ({mode.value}): {exc}"
    return None


def test_every_operation_conforms_to_its_documentation(live: LiveService, schema: Any) -> None:
    seen: Counter[tuple[str, int]] = Counter()
    protocols = {name: _stream_event_validator(schema, name) for name, _ in _PROTOCOL_STREAMS.values()}
    check = _service_checks(_stream_event_validator(schema), seen, protocols)
    operations = [result.ok() for result in schema.get_all_operations()]
    labels = {op.label for op in operations}
    assert {"POST /api/v1/chat", "POST /api/v1/chat/stream", "GET /api/v1/sessions",
            "GET /api/v1/sessions/{session_id}/history", "DELETE /api/v1/sessions/{session_id}"} <= labels
    failures = []
    for operation in operations:
        # The protocol bodies carry the client's copy of the conversation, which the server does not
        # read beyond the last user message, so a "wrong" earlier message is rightly accepted; their
        # bad input has its own tests (tests/test_agui.py, tests/test_aisdk.py).
        protocol_body = operation.method.upper() == "POST" and operation.path in _PROTOCOL_STREAMS
        negative = _takes_input(operation) and not protocol_body
        modes = [GenerationMode.POSITIVE] + ([GenerationMode.NEGATIVE] if negative else [])
        if operation.path == SESSION_STREAM:  # never ends by design (a generated request would wait out the
            continue  # timeout): its input and refusals have their own tests
        for mode in modes:
            failure = _run(operation, mode, live.url, check)
            if failure:
                failures.append(failure)
    assert not failures, "\n\n".join(failures)
    # Both kinds of input really reached the handlers: answers, streams and rejections.
    for label in ("POST /api/v1/chat", "POST /api/v1/chat/stream"):
        assert seen[label, 200] >= 10 and seen[label, 400] >= 10, seen
    with requests.get(f"{live.url}/health/readiness", timeout=REQUEST_TIMEOUT) as after:
        assert after.status_code == 200 and after.json()["status"] == "ready"
