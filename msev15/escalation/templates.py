"""Email templates: a plain-text and an HTML part per message, one function per template.

A template is three ``{name}`` format strings (subject, text, html). Values are substituted,
never re-parsed, so a customer's ``{`` or ``<script>`` stays literal text; in the HTML part every
value is HTML-escaped. Rendering a template that names a variable nobody provides raises
``TemplateError("Missing template variable: X")``; a subject that would span lines is refused.

Variables available to every template (see :func:`template_values`):
``{ticket_id} {customer_id} {query} {use_case} {reason} {timestamp}``, plus the derived
``{use_case_name} {tracking_url} {dashboard_url} {priority} {priority_color}`` and the branding
from the settings, ``{company_name} {support_team}`` (``COMPANY_NAME``, ``SUPPORT_TEAM_NAME``).

Adding a custom template::

    registry = TemplateRegistry.default()
    registry.register("customer_UC2", EmailTemplate(
        subject="We got your question ({ticket_id})",
        text="Dear customer,\\n\\n{query}\\n\\nTicket: {ticket_id}\\n",
        html="<p>Dear customer,</p><p>{query}</p><p>Ticket: {ticket_id}</p>",
    ))
    service = create_service(settings, templates=registry)

A plain function ``(values) -> RenderedEmail`` can be registered the same way.
"""

from __future__ import annotations

import html
import string
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import quote

from msev15.common.mailguard import header_text_problem
from msev15.escalation.models import EscalationRequest, RenderedEmail

TEMPLATE_VARIABLES = ("ticket_id", "customer_id", "query", "use_case", "reason", "timestamp",
                      "use_case_name", "tracking_url", "dashboard_url", "priority", "priority_color",
                      "company_name", "support_team")

_PRIORITY = {"UC2": ("Normal", "#1f6feb"), "UC3": ("High", "#d1242f")}


class TemplateError(ValueError):
    """A template cannot be rendered (missing variable, bad placeholder, multi-line subject)."""


class _Values(Mapping[str, str]):
    """What ``str.format_map`` reads; a missing key is a clear TemplateError, not a KeyError."""

    def __init__(self, values: Mapping[str, str], escape: bool) -> None:
        self._values = values
        self._escape = escape

    def __getitem__(self, key: str) -> str:
        if key not in self._values:
            raise TemplateError(f"Missing template variable: {key}")
        value = str(self._values[key])
        return html.escape(value, quote=True) if self._escape else value

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)


def _placeholders(text: str) -> set[str]:
    """Names used as ``{name}``; anything fancier (``{0}``, ``{a.b}``, ``{a!r}``, ``{a:>5}``) is refused."""
    names = set()
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError as exc:
        raise TemplateError(f"Bad template text: {exc}") from None
    for _, name, spec, conversion in parsed:
        if name is None:
            continue
        if not name.isidentifier() or spec or conversion:
            raise TemplateError(f"Unsupported template placeholder {{{name}}}: use plain {{name}} placeholders")
        names.add(name)
    return names


@dataclass(frozen=True, slots=True)
class EmailTemplate:
    subject: str
    text: str
    html: str

    def __post_init__(self) -> None:
        self.variables  # noqa: B018 - validates the placeholders once, at definition

    @property
    def variables(self) -> frozenset[str]:
        return frozenset(_placeholders(self.subject) | _placeholders(self.text) | _placeholders(self.html))

    def render(self, values: Mapping[str, str]) -> RenderedEmail:
        subject = self.subject.format_map(_Values(values, escape=False)).strip()
        if "\r" in subject or "\n" in subject:
            raise TemplateError("Email subject must be a single line (CR/LF found)")
        problem = header_text_problem(subject)  # other controls, and encoded words hiding CR/LF
        if problem:
            raise TemplateError(f"Email subject {problem}; header injection is not allowed")
        return RenderedEmail(
            subject=subject,
            text=self.text.format_map(_Values(values, escape=False)),
            html=self.html.format_map(_Values(values, escape=True)),
        )


TemplateFunc = Callable[[Mapping[str, str]], RenderedEmail]


def template_values(request: EscalationRequest, *, timestamp: datetime, ticket_base_url: str,
                    admin_ticket_base_url: str, company_name: str = "Example Company",
                    support_team: str = "Support Team") -> dict[str, str]:
    """Every variable the built-in templates know, for one request."""
    ticket = quote(request.ticket_id, safe="")
    priority, color = _PRIORITY.get(request.use_case, ("Normal", "#1f6feb"))
    return {
        "ticket_id": request.ticket_id,
        "customer_id": request.customer_id,
        "query": request.query,
        "use_case": request.use_case,
        "reason": request.reason,
        "timestamp": timestamp.isoformat(timespec="seconds"),
        "use_case_name": request.use_case_name,
        "tracking_url": f"{ticket_base_url}/{ticket}",
        "dashboard_url": f"{admin_ticket_base_url}/{ticket}",
        "priority": priority,
        "priority_color": color,
        "company_name": company_name,
        "support_team": support_team,
    }


# --- layout shared by the HTML parts (inline styles only: mail clients drop <style> blocks) ---

def _page(title: str, heading: str, body: str) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{title}</title>\n</head>\n"
        '<body style="margin:0;padding:0;background:#f4f6f9;font-family:Arial,Helvetica,sans-serif;color:#1c2733;">\n'
        '<table role="presentation" width="100%" cellpadding="0" cellspacing="0" style="background:#f4f6f9;">'
        '<tr><td align="center" style="padding:24px 12px;">\n'
        '<table role="presentation" width="600" cellpadding="0" cellspacing="0" '
        'style="max-width:600px;background:#ffffff;border-radius:8px;overflow:hidden;">\n'
        '<tr><td style="background:#003a70;padding:20px 28px;">'
        '<span style="font-size:24px;font-weight:bold;color:#ffffff;letter-spacing:1px;">{company_name}</span>'
        f'<div style="color:#c9d6e3;font-size:13px;margin-top:4px;">{heading}</div></td></tr>\n'
        f'<tr><td style="padding:28px;font-size:15px;line-height:1.5;">\n{body}\n</td></tr>\n'
        '<tr><td style="background:#eef1f5;padding:14px 28px;font-size:12px;color:#5b6b7b;">'
        "This message was sent by {company_name} about ticket {ticket_id}. Please do not reply to this address."
        "</td></tr>\n</table>\n</td></tr></table>\n</body>\n</html>\n"
    )


_QUOTE = ('<div style="margin:8px 0 20px;padding:12px 16px;background:#f6f8fa;border-left:4px solid #003a70;'
          'white-space:pre-wrap;">{query}</div>')
_TICKET = ('<p style="margin:20px 0 4px;">Ticket ID: <strong>{ticket_id}</strong></p>\n'
           '<p style="margin:0 0 20px;">You can track your ticket status at:<br>'
           '<a href="{tracking_url}" style="color:#0b5cad;">{tracking_url}</a></p>')

_CUSTOMER_TEXT = """Dear Valued Customer,

Thank you for contacting {service}.

{label}
{{query}}

{promise}

Ticket ID: {{ticket_id}}

You can track your ticket status at:
{{tracking_url}}

Best regards,
{team}
"""


def _customer(service: str, label: str, promise: str, team: str, subject: str) -> EmailTemplate:
    body = (
        '<p style="margin:0 0 16px;">Dear Valued Customer,</p>\n'
        f'<p style="margin:0 0 16px;">Thank you for contacting {service}.</p>\n'
        f'<p style="margin:0;"><strong>{label}</strong></p>\n{_QUOTE}\n'
        f'<p style="margin:0;">{promise.replace(chr(10), " ")}</p>\n{_TICKET}\n'
        f'<p style="margin:0;">Best regards,<br>{team}</p>'
    )
    return EmailTemplate(
        subject=subject,
        text=_CUSTOMER_TEXT.format(service=service, label=label, promise=promise, team=team),
        html=_page(subject, service, body),
    )


# The spec's two use cases, with the company and team names from the settings (the spec's
# example templates name a bank; these are neutral until COMPANY_NAME says otherwise).
_CUSTOMER_UC2 = _customer(
    "{company_name} Product Information Service", "Your Question:",
    "We've created a support ticket for your inquiry. Our team will review\n"
    "your question and provide a detailed response within 24-48 hours.",
    "{company_name} {support_team}", "Support Ticket Created: {ticket_id}",
)

_CUSTOMER_UC3 = _customer(
    "{company_name} AI Money Coach Service", "Your Request:",
    "We've created a support ticket to ensure you receive personalized\n"
    "guidance from our financial advisors within 24-48 hours.",
    "{company_name} Financial Advisory Team", "Financial Coaching Request: {ticket_id}",
)

_ACTIONS = ("Review the customer's question", "Prepare a comprehensive response",
            "Update ticket status in system", "Respond within 24-48 hours")

_TEAM_TEXT = """New Support Ticket: {ticket_id}

Use Case: {use_case} - {use_case_name}
Customer ID: {customer_id}
Reason: {reason}

Customer Query:
{query}

Action Required:
""" + "".join(f"{n}. {a}\n" for n, a in enumerate(_ACTIONS, 1)) + """
Ticket Dashboard:
{dashboard_url}
"""

_ROW = ('<tr><th align="left" style="padding:8px 12px;background:#f6f8fa;border:1px solid #d8dee4;width:140px;">'
        '{}</th><td style="padding:8px 12px;border:1px solid #d8dee4;">{}</td></tr>')

_TEAM_HTML_BODY = (
    '<p style="margin:0 0 12px;"><span style="display:inline-block;padding:4px 10px;border-radius:12px;'
    'background:{priority_color};color:#ffffff;font-size:12px;font-weight:bold;">Priority: {priority}</span></p>\n'
    '<h2 style="margin:0 0 16px;font-size:20px;">New Support Ticket: {ticket_id}</h2>\n'
    '<table role="presentation" cellpadding="0" cellspacing="0" width="100%" '
    'style="border-collapse:collapse;margin-bottom:20px;font-size:14px;">\n'
    + "\n".join(_ROW.format(k, v) for k, v in (
        ("Ticket ID", "{ticket_id}"), ("Use Case", "{use_case} - {use_case_name}"),
        ("Customer ID", "{customer_id}"), ("Reason", "{reason}"), ("Priority", "{priority}"),
        ("Created", "{timestamp}")))
    + "\n</table>\n"
    '<p style="margin:0;"><strong>Customer Query:</strong></p>\n' + _QUOTE + "\n"
    '<p style="margin:0 0 4px;"><strong>Action Required:</strong></p>\n<ol style="margin:0 0 24px;">'
    + "".join(f"<li>{html.escape(a)}</li>" for a in _ACTIONS) + "</ol>\n"
    '<p style="margin:0 0 8px;"><a href="{dashboard_url}" style="display:inline-block;padding:12px 22px;'
    'background:#003a70;color:#ffffff;text-decoration:none;border-radius:6px;font-weight:bold;">'
    "Open Ticket Dashboard</a></p>\n"
    '<p style="margin:0;font-size:12px;color:#5b6b7b;">Ticket Dashboard: '
    '<a href="{dashboard_url}" style="color:#0b5cad;">{dashboard_url}</a></p>'
)

_SUPPORT_TEAM = EmailTemplate(
    subject="New Support Ticket: {ticket_id} ({use_case})",
    text=_TEAM_TEXT,
    html=_page("New Support Ticket: {ticket_id} ({use_case})", "Support Ticket Escalation", _TEAM_HTML_BODY),
)


def customer_uc2_email(values: Mapping[str, str]) -> RenderedEmail:
    """To the customer for UC2 (Product Information & FAQ)."""
    return _CUSTOMER_UC2.render(values)


def customer_uc3_email(values: Mapping[str, str]) -> RenderedEmail:
    """To the customer for UC3 (AI Money Coach): Financial Advisory Team wording."""
    return _CUSTOMER_UC3.render(values)


def support_team_email(values: Mapping[str, str]) -> RenderedEmail:
    """To the support team: ticket facts, the query, the four actions, the dashboard link."""
    return _SUPPORT_TEAM.render(values)


def customer_template_name(use_case: str) -> str:
    return f"customer_{use_case}"


SUPPORT_TEAM_TEMPLATE = "support_team"


class TemplateRegistry:
    """Templates by name: ``customer_UC2``, ``customer_UC3`` and ``support_team`` built in."""

    def __init__(self, templates: Mapping[str, EmailTemplate | TemplateFunc] | None = None) -> None:
        self._templates: dict[str, TemplateFunc] = {}
        for name, template in (templates or {}).items():
            self.register(name, template)

    @classmethod
    def default(cls) -> TemplateRegistry:
        return cls({
            customer_template_name("UC2"): customer_uc2_email,
            customer_template_name("UC3"): customer_uc3_email,
            SUPPORT_TEAM_TEMPLATE: support_team_email,
        })

    def register(self, name: str, template: EmailTemplate | TemplateFunc) -> None:
        """Add or replace a template. An :class:`EmailTemplate` naming an unknown variable is refused now."""
        if isinstance(template, EmailTemplate):
            unknown = sorted(template.variables - set(TEMPLATE_VARIABLES))
            if unknown:
                raise TemplateError(f"Missing template variable: {unknown[0]} (template {name!r}; "
                                    f"available: {', '.join(TEMPLATE_VARIABLES)})")
            self._templates[name] = template.render
        elif callable(template):
            self._templates[name] = template
        else:
            raise TypeError(f"template {name!r} must be an EmailTemplate or a function, got {type(template).__name__}")

    def names(self) -> list[str]:
        return sorted(self._templates)

    def render(self, name: str, values: Mapping[str, str]) -> RenderedEmail:
        try:
            func = self._templates[name]
        except KeyError:
            raise TemplateError(f"No template named {name!r} (known: {', '.join(self.names())})") from None
        rendered = func(values)
        if "\r" in rendered.subject or "\n" in rendered.subject:
            raise TemplateError("Email subject must be a single line (CR/LF found)")
        return rendered
