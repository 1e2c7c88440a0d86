"""Bad sendemail / get_email_status input: an error result naming the field, and no mail sent."""

from __future__ import annotations

import pytest

from msev15.escalation.templates import EmailTemplate, TemplateRegistry
from tests.mcp_calls import first_text

from .conftest import connect, http_get, metric, running, uc2_args, uc3_args


@pytest.fixture
async def server(settings_for, smtp):
    async with running(settings_for(smtp_server="127.0.0.1", smtp_port=smtp.port)) as server:
        yield server


async def _rejected(server, smtp, args) -> str:
    async with connect(server) as client:
        result = await client.call_tool("sendemail", args)
    assert result.is_error
    assert smtp.attempts == 0  # nothing reached the SMTP server
    return first_text(result)


async def test_good_input_is_accepted(server, smtp):
    async with connect(server) as client:
        result = await client.call_tool("sendemail", uc2_args(use_case="uc3"))  # case-insensitive
    assert not result.is_error
    assert result.structured_content["email_id"].startswith("EMAIL-UC3-")
    assert len(smtp.messages) == 2


async def test_unknown_use_case_is_rejected(server, smtp):
    text = await _rejected(server, smtp, uc2_args(use_case="UC9"))
    assert "use_case must be 'UC2' or 'UC3', got 'UC9'" in text


async def test_bad_customer_email_is_rejected(server, smtp):
    text = await _rejected(server, smtp, uc2_args(customer_email="not-an-address"))
    assert "customer_email must be an email address" in text and "'not-an-address'" in text


async def test_crlf_in_customer_email_is_rejected(server, smtp):
    text = await _rejected(server, smtp, uc2_args(customer_email="jane@example.com\r\nBcc: all@example.com"))
    assert "customer_email must be an email address" in text


async def test_crlf_in_ticket_id_is_rejected(server, smtp):
    text = await _rejected(server, smtp, uc2_args(ticket_id="TKT-2025-1\r\nBcc: x@example.com"))
    assert "ticket_id must be a single line (no CR/LF)" in text


async def test_malformed_ticket_id_is_rejected(server, smtp):
    text = await _rejected(server, smtp, uc2_args(ticket_id="../../admin"))
    assert "ticket_id must look like TKT-2025-001234" in text


async def test_crlf_in_customer_id_is_rejected(server, smtp):
    text = await _rejected(server, smtp, uc2_args(customer_id="CUST-1\nX-Injected: yes"))
    assert "customer_id must be a single line (no CR/LF)" in text


async def test_blank_query_is_rejected(server, smtp):
    text = await _rejected(server, smtp, uc2_args(query="   "))
    assert "query is required and must not be blank" in text


async def test_overlong_query_is_rejected(server, smtp):
    text = await _rejected(server, smtp, uc2_args(query="x" * 10_001))
    assert "query must be at most 10000 characters, got 10001" in text


async def test_every_problem_is_reported_at_once(server, smtp):
    text = await _rejected(server, smtp, uc2_args(use_case="UC1", customer_email="x", reason=""))
    assert "use_case" in text and "customer_email" in text and "reason is required" in text


async def test_missing_argument_is_rejected(server, smtp):
    args = uc2_args()
    del args["reason"]
    text = await _rejected(server, smtp, args)
    assert "reason" in text


async def test_rejections_are_counted(server, smtp):
    await _rejected(server, smtp, uc2_args(use_case="UC4"))
    _, _, body = await http_get(server, "/metrics")
    assert metric(body, "escalation_requests_rejected_total") == 1


async def test_get_email_status_rejects_a_malformed_id(server):
    async with connect(server) as client:
        result = await client.call_tool("get_email_status", {"email_id": "42; DROP TABLE"})
    assert result.is_error
    assert "email_id must look like EMAIL-UC2-20251107-001" in first_text(result)


async def test_get_email_status_reports_an_unknown_id(server):
    async with connect(server) as client:
        result = await client.call_tool("get_email_status", {"email_id": "EMAIL-UC2-20200101-001"})
    assert result.is_error
    assert "No email with id 'EMAIL-UC2-20200101-001'" in first_text(result)


async def test_a_template_error_is_reported_and_nothing_is_sent(settings_for, smtp):
    registry = TemplateRegistry.default()
    broken = EmailTemplate(subject="{ticket_id}", text="{ticket_id}", html="")
    registry.register("customer_UC2", lambda values: broken.render({k: v for k, v in values.items()
                                                                     if k != "ticket_id"}))
    settings = settings_for(smtp_server="127.0.0.1", smtp_port=smtp.port)
    async with running(settings, templates=registry) as server, connect(server) as client:
        result = await client.call_tool("sendemail", uc2_args())
        fine = await client.call_tool("sendemail", uc3_args())
    assert result.is_error
    assert "Template rendering error: Missing template variable: ticket_id" in first_text(result)
    assert not fine.is_error
    assert {m.rcpt_tos[0] for m in smtp.messages} == {"jane.doe@example.com", "support@example.com"}
    assert len(smtp.messages) == 2  # only the UC3 call's messages
