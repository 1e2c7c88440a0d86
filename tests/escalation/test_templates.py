"""Templates: the spec's plain-text bodies exactly, HTML escaping, custom templates, clear errors."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from msev15.escalation.models import EscalationRequest
from msev15.escalation.templates import (
    EmailTemplate,
    TemplateError,
    TemplateRegistry,
    customer_uc2_email,
    customer_uc3_email,
    support_team_email,
    template_values,
)

from .conftest import uc2_args, uc3_args

WHEN = datetime(2025, 11, 7, 14, 30, tzinfo=timezone(timedelta(hours=7)))


def _values(**args: str) -> dict[str, str]:
    request = EscalationRequest.parse(**args)
    return template_values(request, timestamp=WHEN, ticket_base_url="https://support.example.com/tickets",
                           admin_ticket_base_url="https://support.example.com/admin/tickets")


def test_customer_uc2_plain_text_is_the_specified_body():
    rendered = customer_uc2_email(_values(**uc2_args()))
    assert rendered.subject == "Support Ticket Created: TKT-2025-001234"
    assert rendered.text == """Dear Valued Customer,

Thank you for contacting Example Company Product Information Service.

Your Question:
What is the interest rate for mortgage loans?

We've created a support ticket for your inquiry. Our team will review
your question and provide a detailed response within 24-48 hours.

Ticket ID: TKT-2025-001234

You can track your ticket status at:
https://support.example.com/tickets/TKT-2025-001234

Best regards,
Example Company Support Team
"""


def test_customer_uc3_plain_text_is_the_specified_body():
    rendered = customer_uc3_email(_values(**uc3_args()))
    assert rendered.subject == "Financial Coaching Request: TKT-2025-001235"
    assert rendered.text == """Dear Valued Customer,

Thank you for contacting Example Company AI Money Coach Service.

Your Request:
I need help with complex financial planning across multiple areas...

We've created a support ticket to ensure you receive personalized
guidance from our financial advisors within 24-48 hours.

Ticket ID: TKT-2025-001235

You can track your ticket status at:
https://support.example.com/tickets/TKT-2025-001235

Best regards,
Example Company Financial Advisory Team
"""


def test_support_team_plain_text_is_the_specified_body():
    rendered = support_team_email(_values(**uc2_args(customer_id="CUST-001")))
    assert rendered.subject == "New Support Ticket: TKT-2025-001234 (UC2)"
    assert rendered.text == """New Support Ticket: TKT-2025-001234

Use Case: UC2 - Product Information & FAQ
Customer ID: CUST-001
Reason: Out of scope - Mortgages not in knowledge base

Customer Query:
What is the interest rate for mortgage loans?

Action Required:
1. Review the customer's question
2. Prepare a comprehensive response
3. Update ticket status in system
4. Respond within 24-48 hours

Ticket Dashboard:
https://support.example.com/admin/tickets/TKT-2025-001234
"""


def test_support_team_html_is_a_table_with_priority_and_button():
    html = support_team_email(_values(**uc3_args())).html
    assert html.count("<tr><th") == 6
    assert "Priority: High" in html and "2025-11-07T14:30:00+07:00" in html
    assert '<a href="https://support.example.com/admin/tickets/TKT-2025-001235"' in html
    assert "Open Ticket Dashboard" in html


def test_html_parts_escape_every_value_the_customer_wrote():
    values = _values(**uc2_args(query='<img src=x onerror="alert(1)">', customer_id="A&B",
                                reason="<i>why</i>"))
    for rendered in (customer_uc2_email(values), support_team_email(values)):
        assert "<img" not in rendered.html and "<i>why" not in rendered.html
        assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in rendered.html
    assert "A&amp;B" in support_team_email(values).html
    assert '<img src=x onerror="alert(1)">' in customer_uc2_email(values).text


def test_custom_template_can_be_registered_and_used():
    registry = TemplateRegistry.default()
    registry.register("customer_UC2", EmailTemplate(
        subject="We got it: {ticket_id}",
        text="Hello {customer_id}: {query} ({timestamp})",
        html="<p>{query}</p>",
    ))
    rendered = registry.render("customer_UC2", _values(**uc2_args(query="a < b")))
    assert rendered.subject == "We got it: TKT-2025-001234"
    assert rendered.text == "Hello CUST-001: a < b (2025-11-07T14:30:00+07:00)"
    assert rendered.html == "<p>a &lt; b</p>"
    assert "customer_UC2" in registry.names() and "support_team" in registry.names()


def test_custom_template_function_can_be_registered():
    registry = TemplateRegistry()
    registry.register("plain", lambda values: customer_uc2_email(values))
    assert registry.render("plain", _values(**uc2_args())).subject.startswith("Support Ticket Created")


def test_template_naming_an_unknown_variable_is_refused_at_registration():
    registry = TemplateRegistry.default()
    with pytest.raises(TemplateError, match=r"^Missing template variable: customer_name"):
        registry.register("x", EmailTemplate(subject="Hi {customer_name}", text="", html=""))


def test_rendering_with_a_missing_variable_names_it():
    template = EmailTemplate(subject="{ticket_id}", text="{agent_name}", html="")
    with pytest.raises(TemplateError, match=r"^Missing template variable: agent_name$"):
        template.render({"ticket_id": "TKT-1"})


def test_fancy_placeholders_are_refused():
    for text in ("{0}", "{ticket_id.__class__}", "{ticket_id!r}", "{ticket_id:>9}"):
        with pytest.raises(TemplateError, match="Unsupported template placeholder"):
            EmailTemplate(subject=text, text="", html="")


def test_subject_spanning_lines_is_refused():
    registry = TemplateRegistry()
    registry.register("bad", EmailTemplate(subject="Ticket {ticket_id} {reason}", text="", html=""))
    values = dict(_values(**uc2_args()), reason="first\r\nBcc: victim@example.com")
    with pytest.raises(TemplateError, match="Email subject must be a single line"):
        registry.render("bad", values)


def test_unknown_template_name_is_reported():
    with pytest.raises(TemplateError, match="No template named 'customer_UC7'"):
        TemplateRegistry.default().render("customer_UC7", {})


@pytest.mark.parametrize("reason", ["=?utf-8?q?x=0D=0ABcc:_victim@example.com?=", "first\u2028second", "a\x00b"])
def test_subject_hiding_a_line_break_is_refused(reason):
    """An encoded word the mail library would decode into CR/LF (CVE-2024-6923), or another control."""
    registry = TemplateRegistry()
    registry.register("bad", EmailTemplate(subject="Ticket {ticket_id} {reason}", text="", html=""))
    with pytest.raises(TemplateError, match="header injection is not allowed"):
        registry.render("bad", dict(_values(**uc2_args()), reason=reason))
