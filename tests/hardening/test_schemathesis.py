"""Schemathesis (pinned in setup.cfg) against ``/openapi.json`` of the running service, under
AUTH_MODE=none and AUTH_MODE=api_key (every request then carries a valid key of one tenant).

Every documented operation gets a bounded number of generated requests, valid ones and (where the
operation takes input) invalid ones, derandomized so a run is repeatable; the two modes together
cost well under a minute. The checks are named, not left to the library's defaults:

- ``not_a_server_error`` — no 5xx;
- ``status_code_conformance``, ``content_type_conformance``, ``response_headers_conformance``,
  ``response_schema_conformance`` — each response is one the document describes;
- ``positive_data_acceptance`` — schema-valid input is not refused as invalid;
- ``negative_data_rejection`` — schema-invalid input is refused.

Two reasoned exclusions of ``positive_data_acceptance``: the tenant profile PUT (see
``_profile_body``) and the two protocol POSTs (AG-UI, AI SDK).
Their ``messages`` must contain a ``user`` message whose text is not blank; OpenAPI 3.0 has no
``contains``, so a schema-valid array of only assistant messages is rightly refused. The rule is
in the schema's description, and the refusals have their own tests (tests/test_agui.py,
tests/test_aisdk.py). Their negative data is fuzzed like every other operation's.

On top of those, each response must: carry ``X-Request-ID``, use the error envelope for every
4xx/5xx, and send a stream whose events each match the documented ``StreamEvent`` and end with
exactly one ``done`` or ``error``.
"""

from __future__ import annotations

import asyncio
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
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    positive_data_acceptance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.conftest import make_settings
from tests.hardening.live import LiveService, live_service
from tests.hardening.sse import data_events
from tests.security.authkit import create_keys

MAX_EXAMPLES = 25
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
          response_schema_conformance, positive_data_acceptance, negative_data_rejection]
REQUEST_TIMEOUT = 15.0
SESSION_STREAM = "/api/v1/sessions/{session_id}/events"  # tests/test_session_stream.py
ENVELOPE = ("error", "message", "request_id", "timestamp")
TERMINAL = ("done", "error")

# The headers every request of a running service carries (its API key under AUTH_MODE=api_key).
_CREDENTIALS: dict[str, dict[str, str]] = {}
# A valid conditional PUT of a tenant profile whose If-Match names a version that is not current
# is answered 412 (a precondition, like 409 a conflict with the state): not a refusal of the data.
_ACCEPTED = ["2xx", "3xx", "401", "403", "404", "409", "412", "429", "5xx"]
_CONFIG = {"max-stream-events": 10_000, "request-timeout": REQUEST_TIMEOUT,
           "checks": {"positive_data_acceptance": {"expected-statuses": _ACCEPTED}}}


@pytest.fixture(scope="module", params=["none", "api_key"])
def live(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveService]:
    tmp: Path = tmp_path_factory.mktemp(f"schemathesis-{request.param}")
    overrides: dict[str, Any] = {"auth_mode": request.param}
    if request.param == "api_key":
        keys_db = tmp / "keys.db"
        _, key = asyncio.run(create_keys(keys_db, "acme"))["acme"]
        overrides |= {"api_keys_db_path": str(keys_db), "api_keys_cache_seconds": 2}
    with live_service(make_settings(tmp, **overrides)) as running:
        _CREDENTIALS[running.url] = {"X-API-Key": key} if request.param == "api_key" else {}
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


def _protocol_body(operation: Any) -> bool:
    return bool(operation.method.upper() == "POST" and operation.path in _PROTOCOL_STREAMS)


def _profile_body(operation: Any) -> bool:
    """A tenant profile: header names must be HTTP tokens, tool patterns valid fnmatch patterns
    and server names unique, which OpenAPI 3.0 cannot say (no propertyNames). The rules are in
    the schema's descriptions; every one is tested (tests/test_profile_model.py,
    tests/test_profiles_api.py)."""
    return bool(operation.method.upper() == "PUT" and operation.path == "/api/v1/agent-profile")


# The agent-to-agent endpoints speak JSON-RPC: a bad call is a protocol error in the protocol's own
# body (A2A answers it in a 200, MCP's transport with its JSON-RPC error), never the service's
# envelope. Their good and bad calls are tested with the protocols' own clients instead
# (tests/test_a2a.py, tests/test_mcp_endpoint.py).
_JSON_RPC = ("/a2a", "/mcp")


def _takes_input(operation: Any) -> bool:
    return bool(len(operation.query) or len(operation.path_parameters) or operation.body)


def _run(operation: Any, mode: GenerationMode, live: LiveService, check: Any) -> str | None:
    """Generate and send ``MAX_EXAMPLES`` cases; the first failure report, or None."""
    checks = [c for c in CHECKS
              if not (c is positive_data_acceptance and (_protocol_body(operation) or _profile_body(operation)))]
    headers = _CREDENTIALS[live.url]

    @settings(max_examples=MAX_EXAMPLES, derandomize=True, database=None, deadline=None,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: Any) -> None:
        if headers and case.headers:
            # Credentials made up for the security schemes would be refused (and, two at once, as
            # ambiguous): the service's own key stands in for them. Authentication has its own suite.
            case.headers = {k: v for k, v in case.headers.items() if k.lower() not in ("authorization", "x-api-key")}
        case.call_and_validate(base_url=live.url, headers=headers, checks=[*checks, check],
                               timeout=REQUEST_TIMEOUT)

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
        if operation.path in _JSON_RPC:
            continue
        if operation.path == SESSION_STREAM:  # never ends by design (a generated request would wait out the
            continue  # timeout): its input and refusals have their own tests
        modes = [GenerationMode.POSITIVE] + ([GenerationMode.NEGATIVE] if _takes_input(operation) else [])
        for mode in modes:
            failure = _run(operation, mode, live, check)
            if failure:
                failures.append(failure)
    assert not failures, "\n\n".join(failures)
    # Both kinds of input really reached the handlers: answers, streams and rejections.
    for label in ("POST /api/v1/chat", "POST /api/v1/chat/stream"):
        assert seen[label, 200] >= 5 and seen[label, 400] >= 10, seen  # (api_key: a named tenant is mostly a 403)
    with requests.get(f"{live.url}/health/readiness", timeout=REQUEST_TIMEOUT) as after:
        assert after.status_code == 200 and after.json()["status"] == "ready"
