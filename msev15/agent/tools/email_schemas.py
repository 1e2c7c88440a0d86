"""What the model is shown of the email tools: their argument schemas and descriptions.

:data:`SENDERS` maps each sending tool's name to its description and schema; the test-connection
tool takes no arguments (:data:`CONNECTION_SCHEMA`). The tools themselves are built in
:mod:`msev15.agent.tools.email`.
"""

from __future__ import annotations

from typing import Any

MAX_SUBJECT = 998  # RFC 5322 line limit
MAX_BODY = 100_000
MAX_ADDRESS_FIELD = 4000
MAX_ATTACHMENTS = 10


def _addresses(what: str) -> dict[str, Any]:
    return {"type": "string", "maxLength": MAX_ADDRESS_FIELD,
            "description": f"{what}: one email address, or several separated by commas "
                           "(e.g. 'alice@example.com, Bob Smith <bob@example.com>')."}


_TO = {**_addresses("Recipients"), "minLength": 1}
_CC = _addresses("Optional carbon-copy recipients, visible to everyone")
_BCC = _addresses("Optional blind-copy recipients, hidden from the other recipients")
_SUBJECT = {"type": "string", "minLength": 1, "maxLength": MAX_SUBJECT,
            "description": "The subject line (one line)."}
_TEXT = {"type": "string", "minLength": 1, "maxLength": MAX_BODY, "description": "The message, as plain text."}
_HTML = {"type": "string", "minLength": 1, "maxLength": MAX_BODY,
         "description": "The message, as an HTML document or fragment."}


def _schema(properties: dict[str, Any], required: tuple[str, ...]) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": list(required),
            "additionalProperties": False}


SEND_SCHEMA = _schema({
    "to": _TO, "subject": _SUBJECT,
    "body": {**_TEXT, "description": "The message: plain text, or HTML when 'html' is true."},
    "cc": _CC, "bcc": _BCC,
    "html": {"type": "boolean", "default": False,
             "description": "True when 'body' is HTML (default false)."},
}, ("to", "subject", "body"))
TEXT_SCHEMA = _schema({"to": _TO, "subject": _SUBJECT, "body": _TEXT, "cc": _CC, "bcc": _BCC},
                      ("to", "subject", "body"))
HTML_SCHEMA = _schema({
    "to": _TO, "subject": _SUBJECT, "html_body": _HTML,
    "text_body": {**_TEXT, "description": "Optional plain-text version for mail clients without HTML; "
                                          "made from the HTML when omitted."},
    "cc": _CC, "bcc": _BCC,
}, ("to", "subject", "html_body"))
ATTACHMENTS_SCHEMA = _schema({
    **SEND_SCHEMA["properties"],
    "attachments": {"type": "array", "minItems": 1, "maxItems": MAX_ATTACHMENTS, "uniqueItems": True,
                    "items": {"type": "string", "minLength": 1, "maxLength": 255},
                    "description": "File names relative to this customer's (tenant's) own attachments "
                                   "folder, e.g. 'invoices/INV-1001.pdf'. Only files in that folder can be "
                                   "sent."},
}, ("to", "subject", "body", "attachments"))
CONNECTION_SCHEMA = _schema({}, ())

_AFTER = (" The result says whether the email was sent and how it was delivered; if it was only saved to "
          "the outbox, or NOT sent, tell the customer honestly. Only write to addresses the customer gave "
          "you or that come from their order; never guess an address.")
SENDERS = {  # name: (description, schema)
    "send_email": ("Send an email from the customer-service mailbox, with optional cc, bcc and HTML. Use it "
                   "to email a customer something they asked for (an order confirmation, a summary, an "
                   "answer in writing)." + _AFTER, SEND_SCHEMA),
    "send_text_email": ("Send a plain-text email: the simplest way to email a customer when no formatting "
                        "is needed." + _AFTER, TEXT_SCHEMA),
    "send_html_email": ("Send an HTML-formatted email (headings, tables, bold text, links). A plain-text "
                        "version is added automatically unless you give text_body." + _AFTER, HTML_SCHEMA),
    "send_email_with_attachments": ("Send an email with files attached from this customer's (tenant's) own "
                                    "attachments folder (invoices, manuals, return labels). Give file names "
                                    "relative to that folder; files of other tenants and other files on the "
                                    "server cannot be attached." + _AFTER,
                                    ATTACHMENTS_SCHEMA),
}
CONNECTION_DESCRIPTION = (
    "Check whether email can be sent right now: connects (and logs in) to the SMTP server without "
    "sending anything, or checks the outbox folder when no SMTP server is configured. Use it when "
    "sending failed or someone asks whether email works.")

