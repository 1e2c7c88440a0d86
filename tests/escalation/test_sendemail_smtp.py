"""sendemail over Streamable HTTP with the real MCP client, delivering to a real aiosmtpd server."""

from __future__ import annotations

import re
from datetime import datetime
from email.message import EmailMessage
from typing import Any

from msev15.escalation.service import mask_email
from tests.smtp_server import RecordingSMTP

from .conftest import connect, running, uc2_args, uc3_args


def _parts(message: EmailMessage) -> tuple[str, str]:
    text = message.get_body(preferencelist=("plain",))
    html = message.get_body(preferencelist=("html",))
    assert text is not None and html is not None
    # SMTP carries CRLF line ends; compare with the templates' LF.
    return text.get_content().replace("\r\n", "\n"), html.get_content().replace("\r\n", "\n")


def _by_recipient(smtp: RecordingSMTP) -> dict[str, EmailMessage]:
    return {m.rcpt_tos[0]: m.message for m in smtp.messages}


async def test_lists_both_tools_with_constraints_in_the_schema(settings_for, smtp):
    async with running(settings_for(smtp_server="127.0.0.1", smtp_port=smtp.port)) as server, \
            connect(server) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
    assert set(tools) == {"sendemail", "get_email_status"}
    props = tools["sendemail"].input_schema["properties"]
    assert set(tools["sendemail"].input_schema["required"]) == {
        "ticket_id", "customer_id", "customer_email", "query", "use_case", "reason"}
    assert props["use_case"]["enum"] == ["UC2", "UC3"]
    assert props["customer_email"]["format"] == "email"
    assert re.fullmatch(props["ticket_id"]["pattern"].strip("^$"), "TKT-2025-001234")
    assert tools["sendemail"].output_schema is not None


async def test_uc2_sends_customer_and_team_emails(settings_for, smtp, caplog):
    caplog.set_level("INFO")
    async with running(settings_for(smtp_server="127.0.0.1", smtp_port=smtp.port)) as server, \
            connect(server) as client:
        result = await client.call_tool("sendemail", uc2_args())

    assert not result.is_error
    data: dict[str, Any] = result.structured_content
    assert re.fullmatch(r"EMAIL-UC2-\d{8}-001-[A-Z0-9]{6}", data["email_id"])
    assert data["status"] == "sent"
    assert data["recipients"] == {"customer": "jane.doe@example.com", "support_team": "support@example.com"}
    assert data["errors"] == {}
    sent_at = datetime.fromisoformat(data["sent_at"])
    assert sent_at.utcoffset() is not None
    assert data["email_id"].split("-")[2] == sent_at.strftime("%Y%m%d")

    assert len(smtp.messages) == 2
    assert {m.mail_from for m in smtp.messages} == {"noreply@example.com"}
    by_rcpt = _by_recipient(smtp)
    customer, team = by_rcpt["jane.doe@example.com"], by_rcpt["support@example.com"]

    assert customer["Subject"] == "Support Ticket Created: TKT-2025-001234"
    assert customer["To"] == "jane.doe@example.com"
    assert customer["From"] == "Customer Support <noreply@example.com>"
    assert customer["X-Ticket-ID"] == "TKT-2025-001234"
    assert customer.get_content_type() == "multipart/alternative"
    text, html = _parts(customer)
    assert text.startswith("Dear Valued Customer,\n\n"
                           "Thank you for contacting Example Company Product Information Service.")
    assert "Your Question:\nWhat is the interest rate for mortgage loans?\n" in text
    assert "within 24-48 hours." in text
    assert "Ticket ID: TKT-2025-001234" in text
    assert "https://support.example.com/tickets/TKT-2025-001234" in text
    assert text.rstrip().endswith("Best regards,\nExample Company Support Team")
    assert "<!DOCTYPE html>" in html and "Example Company Product Information Service" in html
    assert 'href="https://support.example.com/tickets/TKT-2025-001234"' in html

    assert team["Subject"] == "New Support Ticket: TKT-2025-001234 (UC2)"
    text, html = _parts(team)
    assert "Use Case: UC2 - Product Information & FAQ\nCustomer ID: CUST-001\n" in text
    assert "Reason: Out of scope - Mortgages not in knowledge base" in text
    assert "Customer Query:\nWhat is the interest rate for mortgage loans?" in text
    for line in ("1. Review the customer's question", "2. Prepare a comprehensive response",
                 "3. Update ticket status in system", "4. Respond within 24-48 hours"):
        assert line in text
    assert "Ticket Dashboard:\nhttps://support.example.com/admin/tickets/TKT-2025-001234" in text
    assert "<table" in html and "Priority: Normal" in html
    assert 'href="https://support.example.com/admin/tickets/TKT-2025-001234"' in html
    assert "Open Ticket Dashboard" in html

    messages = [r.getMessage() for r in caplog.records if r.name.startswith("escalation.")]
    assert any(m.startswith("Sending email for ticket TKT-2025-001234 (UC2)") for m in messages)
    assert f"Email sent to customer: {mask_email('jane.doe@example.com')}" in messages
    assert f"Email sent to support team: {mask_email('support@example.com')}" in messages
    info_text = "\n".join(r.getMessage() for r in caplog.records
                          if r.levelname == "INFO" and r.name.startswith("escalation."))
    assert "jane.doe@example.com" not in info_text


async def test_uc3_uses_money_coach_wording(settings_for, smtp):
    async with running(settings_for(smtp_server="127.0.0.1", smtp_port=smtp.port)) as server, \
            connect(server) as client:
        result = await client.call_tool("sendemail", uc3_args())

    assert not result.is_error
    assert re.fullmatch(r"EMAIL-UC3-\d{8}-001-[A-Z0-9]{6}", result.structured_content["email_id"])
    by_rcpt = _by_recipient(smtp)
    customer, team = by_rcpt["jane.doe@example.com"], by_rcpt["support@example.com"]
    assert customer["Subject"] == "Financial Coaching Request: TKT-2025-001235"
    text, html = _parts(customer)
    assert "Thank you for contacting Example Company AI Money Coach Service." in text
    assert "Your Request:\nI need help with complex financial planning" in text
    assert "guidance from our financial advisors within 24-48 hours." in text
    assert text.rstrip().endswith("Example Company Financial Advisory Team")
    assert "Example Company AI Money Coach Service" in html and "Example Company Financial Advisory Team" in html
    assert team["Subject"] == "New Support Ticket: TKT-2025-001235 (UC3)"
    text, html = _parts(team)
    assert "Use Case: UC3 - AI Money Coach" in text
    assert "Priority: High" in html


async def test_branding_comes_from_the_settings(settings_for, smtp):
    """A damaged-parcel ticket of a parcel shop is mailed in the shop's name, not the spec's bank."""
    settings = settings_for(smtp_server="127.0.0.1", smtp_port=smtp.port, company_name="Acme Parcels",
                            sender_email="help@acme.example", sender_name="Acme Help",
                            support_team_email="team@acme.example", support_team_name="Care Team")
    async with running(settings) as server, connect(server) as client:
        result = await client.call_tool("sendemail", uc2_args(query="My parcel arrived damaged"))

    assert not result.is_error
    assert result.structured_content["recipients"] == {"customer": "jane.doe@example.com",
                                                       "support_team": "team@acme.example"}
    customer = _by_recipient(smtp)["jane.doe@example.com"]
    assert customer["From"] == "Acme Help <help@acme.example>"
    text, html = _parts(customer)
    assert "Thank you for contacting Acme Parcels Product Information Service." in text
    assert text.rstrip().endswith("Best regards,\nAcme Parcels Care Team")
    assert "This message was sent by Acme Parcels about ticket TKT-2025-001234" in html
    for message in smtp.messages:
        raw = message.message.as_string()
        assert "BankX" not in raw and "bank" not in raw.lower()


async def test_defaults_are_neutral(settings_for, smtp):
    async with running(settings_for(smtp_server="127.0.0.1", smtp_port=smtp.port)) as server, \
            connect(server) as client:
        await client.call_tool("sendemail", uc2_args(query="My parcel arrived damaged"))
    for message in smtp.messages:
        assert "bank" not in message.message.as_string().lower()


async def test_customer_text_is_escaped_in_html_and_literal_in_text(settings_for, smtp):
    query = 'Is <script>alert("x")</script> & {ticket_id} safe?'
    reason = "<b>bold</b> reason"
    async with running(settings_for(smtp_server="127.0.0.1", smtp_port=smtp.port)) as server, \
            connect(server) as client:
        result = await client.call_tool("sendemail", uc2_args(query=query, reason=reason, customer_id="C<1>"))

    assert not result.is_error
    for message in smtp.messages:
        text, html = _parts(message.message)
        assert query in text  # plain text carries it as written, placeholders not expanded
        assert "<script>" not in html
        assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; {ticket_id} safe?" in html
    team = _by_recipient(smtp)["support@example.com"]
    _, html = _parts(team)
    assert "&lt;b&gt;bold&lt;/b&gt; reason" in html and "<b>bold</b>" not in html
    assert "C&lt;1&gt;" in html


async def test_email_ids_count_per_day_and_survive_a_restart(settings_for, smtp):
    settings = settings_for(smtp_server="127.0.0.1", smtp_port=smtp.port)
    ids = []
    async with running(settings) as server, connect(server) as client:
        for args in (uc2_args(), uc2_args(), uc3_args()):
            ids.append((await client.call_tool("sendemail", args)).structured_content["email_id"])
    async with running(settings) as server, connect(server) as client:
        ids.append((await client.call_tool("sendemail", uc2_args())).structured_content["email_id"])
    assert [i.split("-")[3] for i in ids] == ["001", "002", "001", "003"]
    assert [i.split("-")[1] for i in ids] == ["UC2", "UC2", "UC3", "UC2"]
    assert len(set(ids)) == 4
