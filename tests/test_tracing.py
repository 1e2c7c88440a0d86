"""OpenTelemetry traces over the wire: a real OTLP/HTTP receiver on loopback decodes what the
service (and the complaints MCP server) export, and the span trees are checked from that."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from msev15.agent.context import MCP
from msev15.agent.handoff_timeout import TIMEOUTS, HandoffTimeouts
from msev15.app import create_app
from msev15.common.telemetry import TelemetryConfig
from msev15.events.tracing import TRACING
from msev15.logs.writer import close_logging, flush_logging, setup_logging
from msev15.store.profiles import PROFILES
from tests.complaints.server import running_complaints_server
from tests.conftest import make_settings, sse_events
from tests.llm_server import Call, Reply, ScriptedLLM
from tests.otlp_receiver import OtlpReceiver
from tests.test_serve_process import Service, _free_port

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{CALLER_SPAN}-01"


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as server:
        yield server


async def _client(aiohttp_client: Any, tmp_path: Path, telemetry: TelemetryConfig | None,
                  **overrides: Any) -> TestClient:
    app = await create_app(make_settings(tmp_path, **overrides), telemetry=telemetry)
    return await aiohttp_client(app)


async def _flush(client: TestClient) -> None:
    """Export every ended span now; in a thread, as the exporter's wait must not hold the loop."""
    assert await asyncio.to_thread(client.app[TRACING].flush)


async def _stream(client: TestClient, message: str, *, headers: dict[str, str] | None = None,
                  session: str = "s1") -> list[dict[str, Any]]:
    resp = await client.post("/api/v1/chat/stream", json={"session_id": session, "message": message,
                                                           "tenant_id": "acme"}, headers=headers or {})
    assert resp.status == 200, await resp.text()
    return sse_events(await resp.text())


def _exporter_threads() -> list[str]:
    """The SDK's batch exporter threads alive now (the SDK names them ``OtelBatch…Processor``)."""
    return [t.name for t in threading.enumerate() if t.name.startswith("OtelBatch")]


async def test_streamed_turn_with_a_local_tool_is_one_trace(aiohttp_client, tmp_path: Path,
                                                            receiver: OtlpReceiver) -> None:
    buffer = io.StringIO()
    setup_logging(level="INFO", stream=buffer)
    # The model client's own request line is written inside the chat span. Other tests (the
    # service's log set-up) may have quieted that logger in this process: let it speak here.
    client_log = logging.getLogger("httpx2")
    client_level = client_log.level
    client_log.setLevel(logging.INFO)
    try:
        async with ScriptedLLM() as llm:
            llm.push(Reply(tool_calls=[Call("get_orders_by_customer", {"customer_id": "CUST-001"}, id="call-1")],
                           model="gpt-test-2026-01-01"),
                     Reply("You have no orders yet.", model="gpt-test-2026-01-01"))
            assert not _exporter_threads()
            client = await _client(aiohttp_client, tmp_path, receiver.config(), llm_provider="openai",
                                   openai_base_url=llm.url + "/v1", openai_model="gpt-test")
            assert _exporter_threads(), "no exporter thread started"
            await client.app[PROFILES].put("acme", {"instructions": "Acme's rules."}, "test")  # version 1
            events = await _stream(client, "My orders please, customer CUST-001", headers={"traceparent": TRACEPARENT})
            assert events[-1]["type"] == "done"
            await _flush(client)
            headers = list(llm.headers)
        flush_logging()
    finally:
        close_logging()
        client_log.setLevel(client_level)

    spans = receiver.spans
    assert {s.trace_id for s in spans} == {TRACE_ID}, "one trace, the caller's"
    server = receiver.one("POST /api/v1/chat/stream")
    assert (server.kind, server.parent_id, server.status) == ("SERVER", CALLER_SPAN, "UNSET")
    assert server.attributes["http.response.status_code"] == 200
    assert server.attributes["http.route"] == "/api/v1/chat/stream"

    agent = receiver.one("invoke_agent CustomerServiceAgent")
    assert (agent.kind, agent.parent_id) == ("INTERNAL", server.span_id)
    assert agent.attributes["gen_ai.operation.name"] == "invoke_agent"
    assert agent.attributes["gen_ai.agent.name"] == "CustomerServiceAgent"
    assert agent.attributes["gen_ai.conversation.id"] == "s1"
    assert agent.attributes["msev15.tenant_id"] == "acme"
    assert agent.attributes["msev15.turn_id"] == events[-1]["turn_id"]
    assert agent.attributes["msev15.profile_version"] == 1 == events[-1]["profile_version"]

    chats = receiver.named("chat gpt-test")
    assert len(chats) == 2 and all(c.parent_id == agent.span_id and c.kind == "CLIENT" for c in chats)
    for chat in chats:
        assert chat.attributes["gen_ai.operation.name"] == "chat"
        assert chat.attributes["gen_ai.provider.name"] == "openai"
        assert chat.attributes["gen_ai.request.model"] == "gpt-test"
        assert chat.attributes["gen_ai.response.model"] == "gpt-test-2026-01-01", "as the endpoint named it"
        assert chat.attributes["gen_ai.usage.input_tokens"] >= 0 and "gen_ai.usage.output_tokens" in chat.attributes
        assert chat.attributes["gen_ai.response.time_to_first_chunk"] >= 0
        assert "gen_ai.input.messages" not in chat.attributes, "no content unless asked"
    assert [c.attributes["gen_ai.response.finish_reasons"] for c in chats] == [["tool_calls"], ["stop"]]

    tool = receiver.one("execute_tool get_orders_by_customer")
    assert (tool.kind, tool.parent_id, tool.status) == ("INTERNAL", agent.span_id, "UNSET")
    assert tool.attributes["gen_ai.tool.name"] == "get_orders_by_customer"
    assert tool.attributes["gen_ai.tool.call.id"] == "call-1"
    assert tool.attributes["gen_ai.tool.type"] == "function"
    assert "gen_ai.tool.call.arguments" not in tool.attributes
    assert "gen_ai.tool.call.result" not in tool.attributes, "no tool result unless asked"

    # Each model request carried the traceparent of its own chat span.
    sent = [h.get("traceparent") or h.get("Traceparent") for h in headers]
    assert sent == [f"00-{TRACE_ID}-{c.span_id}-01" for c in chats]

    # Log lines written inside the turn carry its trace and span.
    # Lines written inside a span carry it; the turn's lines (written by the logging subscriber,
    # afterwards) carry the turn's invoke_agent span.
    lines = buffer.getvalue().splitlines()
    line = next(line for line in lines if "Tool call get_orders_by_customer" in line)
    assert f"trace_id={TRACE_ID} span_id={agent.span_id}" in line
    requests = [line for line in lines if "HTTP Request: POST" in line]
    assert [f"trace_id={TRACE_ID} span_id={c.span_id}" in line for line, c in zip(requests, chats, strict=True)] \
        == [True, True]


async def test_content_only_when_asked(aiohttp_client, tmp_path: Path, receiver: OtlpReceiver) -> None:
    """With capture on, the tool's result is on its execute_tool span: the very text the model
    was sent back for that call (a failed call's too)."""
    config = receiver.config(OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT="true")
    async with ScriptedLLM() as llm:
        llm.push(Reply(tool_calls=[Call("get_orders_by_customer", {"customer_id": "CUST-001"}, id="c-ok"),
                                   Call("get_order_by_id", {"order_id": "ORD-ZZZZZZZZ"}, id="c-bad")]),
                 Reply("None yet."))
        client = await _client(aiohttp_client, tmp_path, config, llm_provider="openai",
                               openai_base_url=llm.url + "/v1", openai_model="gpt-test")
        await _stream(client, "Orders of CUST-001?")
        await _flush(client)
        sent_back = {m["tool_call_id"]: m["content"] for m in llm.requests[1]["messages"] if m["role"] == "tool"}
    agent = receiver.one("invoke_agent CustomerServiceAgent")
    assert "Orders of CUST-001?" in agent.attributes["gen_ai.input.messages"]
    tool = receiver.one("execute_tool get_orders_by_customer")
    assert "CUST-001" in tool.attributes["gen_ai.tool.call.arguments"]
    assert tool.attributes["gen_ai.tool.call.result"] == sent_back["c-ok"]
    assert json.loads(sent_back["c-ok"])["customer_id"] == "CUST-001"
    failed = receiver.one("execute_tool get_order_by_id")
    assert (failed.status, failed.attributes["gen_ai.tool.call.result"]) == ("ERROR", sent_back["c-bad"])
    assert "ORD-ZZZZZZZZ" in sent_back["c-bad"]
    assert "None yet." in receiver.named("chat gpt-test")[-1].attributes["gen_ai.output.messages"]


async def test_model_failure_marks_the_turn_and_the_call(aiohttp_client, tmp_path: Path,
                                                         receiver: OtlpReceiver) -> None:
    async with ScriptedLLM() as llm:
        llm.push(Reply(status=500))
        client = await _client(aiohttp_client, tmp_path, receiver.config(), llm_provider="openai",
                               openai_base_url=llm.url + "/v1", openai_model="gpt-test", llm_max_retries=0)
        events = await _stream(client, "hello")
        assert events[-1]["type"] == "error"
        await _flush(client)
    chat = receiver.one("chat gpt-test")
    agent = receiver.one("invoke_agent CustomerServiceAgent")
    assert (chat.status, chat.attributes["error.type"]) == ("ERROR", events[-1]["error"])
    assert (agent.status, agent.attributes["error.type"]) == ("ERROR", events[-1]["error"])
    assert receiver.one("POST /api/v1/chat/stream").status == "UNSET", "the stream itself answered 200"


async def test_a_failed_tool_call_is_an_error_span(aiohttp_client, tmp_path: Path, receiver: OtlpReceiver) -> None:
    """A tool that fails (no such order): its execute_tool span has status ERROR and error.type;
    the error text stays off the span unless content capture is on."""
    async with ScriptedLLM() as llm:
        llm.push(Reply(tool_calls=[Call("get_order_by_id", {"order_id": "ORD-ZZZZZZZZ"})]), Reply("No such order."))
        client = await _client(aiohttp_client, tmp_path, receiver.config(), llm_provider="openai",
                               openai_base_url=llm.url + "/v1", openai_model="gpt-test")
        events = await _stream(client, "Where is ORD-ZZZZZZZZ?")
        assert next(e for e in events if e["type"] == "tool_result")["ok"] is False
        await _flush(client)
    tool = receiver.one("execute_tool get_order_by_id")
    assert (tool.status, tool.attributes["error.type"]) == ("ERROR", "tool_error")
    assert "ORD-ZZZZZZZZ" not in str(tool.attributes)  # no arguments, result or error text by default
    assert "gen_ai.tool.call.result" not in tool.attributes
    assert receiver.one("invoke_agent CustomerServiceAgent").status != "ERROR"  # the turn itself answered


async def test_mcp_call_joins_the_complaints_server_to_the_trace(aiohttp_client, tmp_path: Path,
                                                                 receiver: OtlpReceiver) -> None:
    server_telemetry = receiver.config("msev15-complaints")
    async with running_complaints_server(tmp_path / "complaints.db", telemetry=server_telemetry) as server:
        client = await _client(aiohttp_client, tmp_path, receiver.config(), mcp_server_url=server.url)
        assert await client.app[MCP]["complaints"].wait_connected(10)
        events = await _stream(client, "I want to register a complaint for customer CUST-001 about order "
                                       "ORD-1A2B3C4D: the parcel arrived damaged", headers={"traceparent": TRACEPARENT})
        assert next(e for e in events if e["type"] == "tool_result")["ok"] is True
        await _flush(client)
    # Leaving the block stopped the server, which flushed its spans.
    tool = receiver.one("execute_tool register_complaint")
    client_span = next(s for s in receiver.named("tools/call register_complaint") if s.kind == "CLIENT")
    server_span = next(s for s in receiver.named("tools/call register_complaint") if s.kind == "SERVER")
    agent = receiver.one("invoke_agent CustomerServiceAgent")
    assert tool.trace_id == client_span.trace_id == server_span.trace_id == TRACE_ID
    assert client_span.parent_id == agent.span_id and client_span.service == "msev15"
    assert client_span.attributes["mcp.method.name"] == "tools/call"
    assert (server_span.service, server_span.parent_id) == ("msev15-complaints", client_span.span_id)
    assert server_span.attributes["mcp.method.name"] == "tools/call"
    assert server_span.attributes["gen_ai.tool.name"] == "register_complaint"


async def test_a_failed_mcp_tool_call_is_an_error_on_both_spans(aiohttp_client, tmp_path: Path,
                                                                 receiver: OtlpReceiver) -> None:
    """The complaints server refuses the call (no such complaint): the execute_tool span and the
    MCP tools/call CLIENT span both have status ERROR and error.type, the server's text off them."""
    async with running_complaints_server(tmp_path / "complaints.db") as server, ScriptedLLM() as llm:
        llm.push(Reply(tool_calls=[Call("get_complaint", {"complaint_id": "CMP-0A0B0C0D"}, id="c-get")]),
                 Reply("I could not find that complaint."))
        client = await _client(aiohttp_client, tmp_path, receiver.config(), mcp_server_url=server.url,
                               llm_provider="openai", openai_base_url=llm.url + "/v1", openai_model="gpt-test")
        assert await client.app[MCP]["complaints"].wait_connected(10)
        events = await _stream(client, "Where is my complaint CMP-0A0B0C0D?")
        assert next(e for e in events if e["type"] == "tool_result")["ok"] is False
        assert events[-1]["type"] == "done"
        await _flush(client)
    tool = receiver.one("execute_tool get_complaint")
    call = receiver.one("tools/call get_complaint")
    assert call.kind == "CLIENT" and call.attributes["mcp.method.name"] == "tools/call"
    assert (tool.status, tool.attributes["error.type"]) == ("ERROR", "tool_error")
    assert (call.status, call.attributes["error.type"]) == ("ERROR", "ToolError")
    assert "CMP-0A0B0C0D" not in str(tool.attributes) + str(call.attributes)  # no content by default


async def test_tracing_off_starts_nothing_and_sends_no_traceparent(aiohttp_client, tmp_path: Path) -> None:
    assert TelemetryConfig.from_env({"OTEL_SERVICE_NAME": "x"}, "msev15") is None
    assert TelemetryConfig.from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1",
                                     "OTEL_SDK_DISABLED": "true"}, "msev15") is None
    async with ScriptedLLM() as llm:
        client = await _client(aiohttp_client, tmp_path, None, llm_provider="openai",
                               openai_base_url=llm.url + "/v1", openai_model="gpt-test")
        events = await _stream(client, "hello", headers={"traceparent": TRACEPARENT})
        assert events[-1]["type"] == "done"
        assert not _exporter_threads()
        assert all("traceparent" not in {k.lower() for k in h} for h in llm.headers)
        assert TRACING not in client.app


def test_tracing_off_loads_no_tracing_code(tmp_path: Path) -> None:
    """Off costs nothing: a service built and run through a turn without an OTLP endpoint never
    imports the tracing modules or the OpenTelemetry SDK (a fresh interpreter, so nothing else in
    this test run has loaded them; not even the test harness, which loads the SDK for its
    receiver), so no hook of theirs is on any path."""
    script = f"""
import asyncio, sys
from msev15.app import create_app
from msev15.config import Settings
from aiohttp.test_utils import TestClient, TestServer

async def main():
    data = {str(tmp_path)!r}
    app = await create_app(Settings.defaults(
        order_db_path=data + "/orders.db", session_db_path=data + "/sessions.db",
        api_keys_db_path=data + "/api_keys.db", email_outbox_dir=data + "/outbox", log_to_file=False,
        mcp_server_url="", llm_provider="offline"))
    async with TestClient(TestServer(app)) as client:
        resp = await client.post("/api/v1/chat", json={{"session_id": "s1", "message": "hello"}})
        assert resp.status == 200, await resp.text()
    loaded = sorted(m for m in sys.modules if m in ("msev15.agent.tracing", "msev15.events.tracing",
                    "msev15.handlers.tracing") or m.startswith("opentelemetry.sdk"))
    print("LOADED", loaded)

asyncio.run(main())
"""
    import subprocess

    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env,
                          cwd=Path(__file__).resolve().parent.parent)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "LOADED []" in done.stdout, done.stdout


async def test_responses_api_spans_name_the_answering_model_and_finish(aiohttp_client, tmp_path: Path,
                                                                       receiver: OtlpReceiver) -> None:
    async with ScriptedLLM() as llm:
        llm.push(Reply(tool_calls=[Call("get_orders_by_customer", {"customer_id": "CUST-001"})], model="gpt-r-1"),
                 Reply("None yet.", model="gpt-r-1"))
        client = await _client(aiohttp_client, tmp_path, receiver.config(), llm_provider="openai", llm_api="responses",
                               openai_base_url=llm.url + "/v1", openai_model="gpt-test")
        assert (await _stream(client, "Orders of CUST-001?"))[-1]["type"] == "done"
        await _flush(client)
    chats = receiver.named("chat gpt-test")
    assert [c.attributes["gen_ai.response.model"] for c in chats] == ["gpt-r-1", "gpt-r-1"]
    assert [c.attributes["gen_ai.response.finish_reasons"] for c in chats] == [["tool_calls"], ["stop"]]
    assert all(c.attributes["gen_ai.usage.input_tokens"] > 0 for c in chats)


@pytest.mark.parametrize("api", ["chat", "responses"])
async def test_azure_model_calls_name_the_azure_provider(aiohttp_client, tmp_path: Path, receiver: OtlpReceiver,
                                                         api: str) -> None:
    """Through the Azure URL shapes (deployments, or the v1 Responses URL), each chat span names
    the provider ``azure.ai.openai`` and the request carries that span's traceparent."""
    async with ScriptedLLM() as llm:
        llm.push(Reply(tool_calls=[Call("get_orders_by_customer", {"customer_id": "CUST-001"})]), Reply("None yet."))
        client = await _client(aiohttp_client, tmp_path, receiver.config(), llm_provider="azure", llm_api=api,
                               azure_openai_endpoint=llm.url, azure_openai_api_key="azure-key-abcdef",
                               azure_openai_responses_deployment_name="gpt-4o-dep", llm_max_retries=0)
        assert (await _stream(client, "Orders of CUST-001?"))[-1]["type"] == "done"
        await _flush(client)
        paths, headers = list(llm.paths), list(llm.headers)
    assert all(p.startswith("/openai/") for p in paths) and len(paths) == 2, paths
    chats = [s for s in receiver.spans if s.attributes.get("gen_ai.operation.name") == "chat"]
    assert len(chats) == 2
    assert [c.attributes["gen_ai.provider.name"] for c in chats] == ["azure.ai.openai"] * 2
    assert [c.name for c in chats] == ["chat gpt-4o-dep"] * 2
    # (no caller's traceparent: the trace is new, so its flags may also say the id is random)
    assert [h["traceparent"].split("-")[1:3] for h in headers] == [[c.trace_id, c.span_id] for c in chats]


def test_endpoint_and_standard_variables() -> None:
    config = TelemetryConfig.from_env({
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318/", "OTEL_SERVICE_NAME": "cs-agent",
        "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=prod,team=support%20desk,broken",
        "OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.25",
        "OTEL_EXPORTER_OTLP_HEADERS": "api-key=secret"}, "msev15")
    assert config is not None
    assert config.endpoint == "http://collector:4318/v1/traces"
    assert config.service_name == "cs-agent"
    assert dict(config.resource) == {"deployment.environment": "prod", "team": "support desk"}
    assert (config.sampler, config.sampler_arg, dict(config.headers)) == ("traceidratio", "0.25", {"api-key": "secret"})
    assert config.capture_content is False
    traces_only = TelemetryConfig.from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://a:4318",
                                            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://b:4318/custom"}, "msev15")
    assert traces_only is not None and traces_only.endpoint == "http://b:4318/custom"
    default = TelemetryConfig.from_env({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://b:4318/v1/traces"}, "msev15")
    assert default is not None and default.service_name == "msev15"


@pytest.mark.subprocess
async def test_serve_and_its_reference_servers_export_one_trace(tmp_path: Path, receiver: OtlpReceiver) -> None:
    """The real processes, configured only by OTEL_* in their environment: the service and the
    complaints and EscalationComms servers it supervises put their spans in the caller's trace,
    and SIGTERM flushes what is still batched before they exit."""
    port = _free_port()
    environ = {**os.environ, "SERVER_HOST": "127.0.0.1", "SERVER_PORT": str(port), "LOG_TO_FILE": "false",
               "ORDER_DB_PATH": str(tmp_path / "orders.db"), "EMAIL_OUTBOX_DIR": str(tmp_path / "outbox"),
               "COMPLAINTS_DB_PATH": str(tmp_path / "complaints.db"), "LLM_PROVIDER": "offline",
               "MCP_SERVER_URL": "", "ESCALATION_MCP_URL": "", "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint}
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "msev15", "serve", "--with-reference-servers",
                                                cwd=tmp_path, env=environ, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    service = Service(proc, port)
    try:
        await service.read_until("API Documentation:")
        async with aiohttp.ClientSession() as http:
            body = {"session_id": "s1", "tenant_id": "acme",
                    "message": "I want to register a complaint for customer CUST-001: the parcel arrived damaged"}
            async with http.post(f"{service.url}/api/v1/chat", json=body,
                                 headers={"traceparent": TRACEPARENT}) as resp:
                assert resp.status == 200, await resp.text()
                assert "registered" in (await resp.json())["message"]
            body = {"session_id": "s2", "tenant_id": "acme", "message": "Please open a support ticket for customer "
                    "CUST-1001, email jane@example.com: my refund never arrived"}
            async with http.post(f"{service.url}/api/v1/chat", json=body,
                                 headers={"traceparent": TRACEPARENT}) as resp:
                assert resp.status == 200, await resp.text()
                assert "support ticket" in (await resp.json())["message"]
    finally:
        proc.send_signal(signal.SIGTERM)
        code, _, err = await service.finish()
    assert code == 0, err
    # Both processes have exited, so what they flushed on the way out has arrived.
    services = {s.service for s in receiver.spans if s.trace_id == TRACE_ID}
    assert services == {"msev15", "msev15-complaints", "msev15-escalation"}, services
    client_span = next(s for s in receiver.named("tools/call register_complaint") if s.kind == "CLIENT")
    server_span = next(s for s in receiver.named("tools/call register_complaint") if s.kind == "SERVER")
    assert server_span.parent_id == client_span.span_id
    escalation = next(s for s in receiver.named("tools/call sendemail") if s.kind == "SERVER")
    assert escalation.service == "msev15-escalation"
    assert [s.parent_id for s in receiver.named("POST /api/v1/chat")] == [CALLER_SPAN, CALLER_SPAN]


async def test_a_continuation_links_to_the_turn_it_continues(aiohttp_client, tmp_path: Path,
                                                             receiver: OtlpReceiver) -> None:
    """An approval's continuation turn is its own invoke_agent span, linked to the paused one."""
    async with ScriptedLLM() as llm:
        llm.push(Reply(tool_calls=[Call("update_order_status", {"order_id": "ORD-ZZZZZZZZ", "status": "cancelled"},
                                        "c-upd")]), Reply("It stays as it is."))
        client = await _client(aiohttp_client, tmp_path, receiver.config(), llm_provider="openai",
                               openai_base_url=llm.url + "/v1", openai_model="gpt-test",
                               tool_approval=("update_order_status",))
        events = await _stream(client, "Cancel ORD-ZZZZZZZZ")
        assert events[-1]["status"] == "waiting"
        decided = await client.post("/api/v1/sessions/s1/pending/c-upd", params={"tenant_id": "acme"},
                                    json={"approve": False, "reason": "no"})
        turn_id = (await decided.json())["turn_id"]
        resp = await client.get(f"/api/v1/sessions/s1/turns/{turn_id}/events", params={"tenant_id": "acme"})
        assert sse_events(await resp.text())[-1]["type"] == "done"
        await _flush(client)
    paused, continued = sorted(receiver.named("invoke_agent CustomerServiceAgent"),
                               key=lambda s: s.attributes["msev15.turn_id"] == turn_id)
    assert continued.attributes["msev15.turn_id"] == turn_id
    assert continued.links == [paused.span_id]
    assert paused.links == []


async def test_the_agent_s_first_turn_after_a_handoff_links_to_the_turn_that_handed_off(
        aiohttp_client, tmp_path: Path, receiver: OtlpReceiver) -> None:
    """Released by an operator, and back after the timeout (no ticket service): each time the
    agent's next turn links to the turn that handed off; the messages held meanwhile ran no turn."""
    handoff = Call("handoff_to_human", {"reason": "asked for a person", "summary": "wants a person"})
    async with ScriptedLLM() as llm:
        llm.push(Reply(tool_calls=[handoff]), Reply("Back with you."), Reply(tool_calls=[handoff]),
                 Reply("Back again."))
        client = await _client(aiohttp_client, tmp_path, receiver.config(), llm_provider="openai",
                               openai_base_url=llm.url + "/v1", openai_model="gpt-test",
                               handoff_timeout_seconds=3600)
        tenant = {"tenant_id": "acme"}
        done = (await _stream(client, "A person please"))[-1]
        assert done["status"] == "with_human"
        first = done["turn_id"]
        assert (await _stream(client, "Hello?"))[-1]["status"] == "with_human"  # held: no turn
        assert (await client.post("/api/v1/handoffs/s1/claim", params=tenant)).status == 200
        assert (await client.post("/api/v1/handoffs/s1/release", params=tenant, json={})).status == 200
        released = (await _stream(client, "Thanks"))[-1]["turn_id"]

        done = (await _stream(client, "A person again"))[-1]
        assert done["status"] == "with_human"
        second = done["turn_id"]
        timeouts = client.app[TIMEOUTS]
        eager = HandoffTimeouts(timeouts.handoffs, timeouts.sessions, timeouts.events, timeouts.registry, timeout=0)
        await eager.sweep()  # nobody came: back to the agent, without a ticket service
        assert eager.ticketed == 1
        returned = (await _stream(client, "Still there?"))[-1]["turn_id"]
        await _flush(client)
    turns = {s.attributes["msev15.turn_id"]: s for s in receiver.named("invoke_agent CustomerServiceAgent")}
    assert set(turns) == {first, released, second, returned}  # the held message ran none
    assert turns[released].links == [turns[first].span_id]
    assert turns[returned].links == [turns[second].span_id]
    assert turns[first].links == [] and turns[second].links == []
