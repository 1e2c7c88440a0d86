"""Retries, failures, the time budget, delivery tracking, /metrics and /health, over real servers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from tests.complaints.server import eventually
from tests.smtp_server import RecordingSMTP

from .conftest import RefusingSMTP, connect, http_get, metric, running, uc2_args


@dataclass
class Silent:
    """What a hung SMTP server saw: its port, the connections it accepted, and how many of those
    the client closed (and what the client sent before that)."""

    port: int = 0
    accepted: int = 0
    closed_by_client: int = 0
    received: bytes = b""


@asynccontextmanager
async def silent_server() -> AsyncIterator[Silent]:
    """A TCP server that accepts and then never says a word (a hung SMTP server)."""
    seen = Silent()
    writers: list[asyncio.StreamWriter] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.accepted += 1
        writers.append(writer)
        seen.received += await reader.read()  # until the client closes its end
        seen.closed_by_client += 1

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    seen.port = server.sockets[0].getsockname()[1]
    try:
        yield seen
    finally:
        server.close()
        for writer in writers:
            writer.close()
        await server.wait_closed()


async def test_transient_failures_are_retried_then_sent(settings_for):
    async with RecordingSMTP(fail_first=2, fail_code=421) as smtp, \
            running(settings_for(smtp_server="127.0.0.1", smtp_port=smtp.port)) as server, \
            connect(server) as client:
        result = await client.call_tool("sendemail", uc2_args())
        status = await client.call_tool("get_email_status", {"email_id": result.structured_content["email_id"]})
        _, _, metrics = await http_get(server, "/metrics")

    assert not result.is_error and result.structured_content["status"] == "sent"
    assert len(smtp.messages) == 2 and smtp.attempts == 4
    records = status.structured_content["recipients"]
    assert sum(r["attempts"] for r in records.values()) == 4
    assert all(r["status"] == "sent" for r in records.values())
    assert metric(metrics, "escalation_email_retries_total", backend="smtp") == 2
    assert metric(metrics, "escalation_emails_total", use_case="UC2", status="sent") == 1


async def test_smtp_down_fails_after_the_retries_without_hanging(settings_for, dead_port, caplog):
    """A refused connection fails each attempt at once: all three attempts run, on the configured
    backoff (base 10 ms, doubling), and the time budget never has to cut one."""
    settings = settings_for(smtp_server="127.0.0.1", smtp_port=dead_port, email_retry_count=3,
                            email_timeout_seconds=30.0)
    async with running(settings) as server, connect(server) as client:
        result = await client.call_tool("sendemail", uc2_args())
        email_id = result.structured_content["email_id"]
        status = await client.call_tool("get_email_status", {"email_id": email_id})
        _, _, metrics = await http_get(server, "/metrics")
        _, _, health = await http_get(server, "/health")

    assert result.is_error  # a failure is never reported as success
    data = result.structured_content
    assert data["status"] == "failed"
    assert set(data["errors"]) == {"customer", "support_team"}
    for error in data["errors"].values():
        assert error.startswith("Failed to deliver email after 3 retries: cannot reach SMTP server 127.0.0.1:")
        assert "EMAIL_TIMEOUT_SECONDS" not in error  # each attempt failed by itself, none hung until the budget
    # Two retries per recipient, waiting base x 1 then base x 2; none after the last attempt.
    retries = [r.getMessage() for r in caplog.records if r.name == "escalation.delivery"]
    assert sorted(m.split(" failed ")[0] + m.split(";")[1] for m in retries if "retrying in" in m) == [
        "smtp attempt 1/3 retrying in 0.01s", "smtp attempt 1/3 retrying in 0.01s",
        "smtp attempt 2/3 retrying in 0.02s", "smtp attempt 2/3 retrying in 0.02s"]
    records = status.structured_content["recipients"]
    assert status.structured_content["status"] == "failed"
    assert {r["attempts"] for r in records.values()} == {3}
    assert all(r["last_error"].startswith("Failed to deliver email after 3 retries") for r in records.values())
    assert metric(metrics, "escalation_emails_total", use_case="UC2", status="failed") == 1
    assert metric(metrics, "escalation_messages_total", recipient="customer", backend="smtp", status="failed") == 1
    assert metric(metrics, "escalation_email_retries_total", backend="smtp") == 4
    assert metric(metrics, "escalation_email_delivery_success_rate") == 0.0
    assert '"failed"' in health
    assert any("Email to customer j***e@example.com failed" in r.getMessage() for r in caplog.records)


async def test_hung_smtp_server_is_cut_at_the_time_budget(settings_for):
    """A server that never answers holds each message's one attempt until the budget cuts it:
    one connection per recipient, each closed by the client, no retry (the budget is spent)."""
    budget = 0.5
    async with silent_server() as silent:
        settings = settings_for(smtp_server="127.0.0.1", smtp_port=silent.port, email_timeout_seconds=budget)
        async with running(settings) as server, connect(server) as client:
            probed = silent.accepted  # the start-up probe's connection (it too is cut, and start-up goes on)
            started = time.monotonic()
            result = await client.call_tool("sendemail", uc2_args())
            elapsed = time.monotonic() - started
            status = await client.call_tool("get_email_status", {"email_id": result.structured_content["email_id"]})
        await eventually(lambda: silent.closed_by_client == silent.accepted, "the client to close each hung connection")

    # The server never answers, so the call cannot end before the budget (a lower bound only:
    # load can stretch it, never shorten it). That the budget is what ended it, the errors say.
    assert elapsed >= budget
    assert result.structured_content["status"] == "failed"
    for error in result.structured_content["errors"].values():
        assert error.startswith("Failed to deliver email after 1 retry: ")
        assert "EMAIL_TIMEOUT_SECONDS" in error
    assert {r["attempts"] for r in status.structured_content["recipients"].values()} == {1}
    assert silent.accepted - probed == 2  # one attempt per recipient
    assert silent.received == b""  # the client waited for a greeting and sent nothing


async def test_one_refused_recipient_gives_a_partial_result(settings_for):
    async with RefusingSMTP(refuse={"jane.doe@example.com"}) as smtp, \
            running(settings_for(smtp_server="127.0.0.1", smtp_port=smtp.port)) as server, \
            connect(server) as client:
        result = await client.call_tool("sendemail", uc2_args())
        status = await client.call_tool("get_email_status", {"email_id": result.structured_content["email_id"]})

    assert result.is_error
    data = result.structured_content
    assert data["status"] == "partial"
    assert list(data["errors"]) == ["customer"]
    # A permanent refusal is not retried.
    assert data["errors"]["customer"].startswith("Failed to deliver email after 1 retry: ")
    assert "550" in data["errors"]["customer"]
    assert [m.rcpt_tos for m in smtp.messages] == [("support@example.com",)]
    records = status.structured_content["recipients"]
    assert status.structured_content["status"] == "partial"
    assert records["customer"]["status"] == "failed" and records["customer"]["attempts"] == 1
    assert records["support_team"]["status"] == "sent" and records["support_team"]["provider_message_id"]


async def test_get_email_status_returns_the_delivery_record(settings_for, smtp):
    async with running(settings_for(smtp_server="127.0.0.1", smtp_port=smtp.port)) as server, \
            connect(server) as client:
        sent = await client.call_tool("sendemail", uc2_args())
        email_id = sent.structured_content["email_id"]
        result = await client.call_tool("get_email_status", {"email_id": email_id})

    assert not result.is_error
    data = result.structured_content
    assert data["email_id"] == email_id
    assert data["ticket_id"] == "TKT-2025-001234" and data["use_case"] == "UC2"
    assert data["status"] == "sent"
    customer = data["recipients"]["customer"]
    assert customer["recipient"] == "jane.doe@example.com"
    assert customer["backend"] == "smtp" and customer["attempts"] == 1 and customer["last_error"] is None
    message_ids = {m.message["Message-ID"] for m in smtp.messages}
    assert customer["provider_message_id"] in message_ids
    assert data["recipients"]["support_team"]["provider_message_id"] in message_ids
    assert customer["sent_at"] and customer["created_at"]


async def test_metrics_move_with_each_send(settings_for, smtp):
    async with running(settings_for(smtp_server="127.0.0.1", smtp_port=smtp.port)) as server:
        status, content_type, before = await http_get(server, "/metrics")
        async with connect(server) as client:
            await client.call_tool("sendemail", uc2_args())
            await client.call_tool("sendemail", uc2_args())
        _, _, after = await http_get(server, "/metrics")

    assert status == 200 and content_type.startswith("text/plain")
    assert metric(before, "escalation_emails_total", use_case="UC2", status="sent") == 0
    assert metric(after, "escalation_emails_total", use_case="UC2", status="sent") == 2
    assert metric(after, "escalation_messages_total", recipient="support_team", backend="smtp", status="sent") == 2
    assert metric(after, "escalation_email_delivery_success_rate") == 1.0
    assert metric(after, "escalation_email_send_seconds_count", use_case="UC2") == 2
    assert metric(after, "escalation_template_render_seconds_count", template="customer_UC2") == 2
    assert metric(after, "escalation_template_render_seconds_count", template="support_team") == 2
    assert "# TYPE escalation_email_send_seconds histogram" in after


async def test_health_reports_the_backend(settings_for, smtp):
    async with running(settings_for(smtp_server="127.0.0.1", smtp_port=smtp.port)) as server:
        status, content_type, body = await http_get(server, "/health")
    assert status == 200 and content_type.startswith("application/json")
    assert '"status":"ok"' in body.replace(" ", "")
    assert '"backend":"smtp"' in body.replace(" ", "")
    assert f"127.0.0.1:{smtp.port}" in body
