"""Values of the escalation service: the validated request, outgoing messages, delivery records.

:meth:`EscalationRequest.parse` is the one place where tool input is checked; every problem is
reported by field name with what is expected, so an MCP client (often a model) can fix its call.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

USE_CASES: dict[str, str] = {
    "UC2": "Product Information & FAQ",
    "UC3": "AI Money Coach",
}

Role = Literal["customer", "support_team"]
ROLES: tuple[Role, ...] = ("customer", "support_team")

# Per-message states: pending (being sent), sent (accepted by the SMTP server, the outbox or ACS),
# delivered (ACS confirmed delivery), failed.
MessageStatus = Literal["pending", "sent", "delivered", "failed"]
# A sendemail call: its messages' statuses taken together (overall_status).
CallStatus = Literal["pending", "sent", "partial", "delivered", "failed"]

EMAIL_RE = re.compile(
    r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+"
)
TICKET_ID_RE = re.compile(r"TKT-[A-Za-z0-9]+(?:-[A-Za-z0-9]+)*")
EMAIL_TAG_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O or 1/I to misread
# The tag is absent from ids written before ids became per tenant; those still resolve.
EMAIL_ID_RE = re.compile(r"EMAIL-(UC[23])-(\d{8})-(\d{3,})(?:-[A-Z0-9]{6})?")
TICKET_ID_MAX = 64
CUSTOMER_ID_MAX = 128
QUERY_MAX = 10_000
REASON_MAX = 1_000
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


class InvalidRequest(ValueError):
    """Bad tool input; the message lists every problem, one per line."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _text(problems: list[str], name: str, value: Any, limit: int, *, single_line: bool) -> str:
    if not isinstance(value, str):
        problems.append(f"{name} must be a string, got {type(value).__name__}")
        return ""
    text = value.strip()
    if not text:
        problems.append(f"{name} is required and must not be blank")
    elif len(text) > limit:
        problems.append(f"{name} must be at most {limit} characters, got {len(text)}")
    elif single_line and ("\r" in text or "\n" in text):
        problems.append(f"{name} must be a single line (no CR/LF), got {_shown(value)}")
    elif _CONTROL.search(text):
        problems.append(f"{name} must not contain control characters, got {_shown(value)}")
    return text


@dataclass(frozen=True, slots=True)
class EscalationRequest:
    ticket_id: str
    customer_id: str
    customer_email: str
    query: str
    use_case: str
    reason: str

    @classmethod
    def parse(cls, *, ticket_id: Any, customer_id: Any, customer_email: Any, query: Any, use_case: Any,
              reason: Any) -> EscalationRequest:
        """Validate and normalise tool input; raises :class:`InvalidRequest` with every problem."""
        problems: list[str] = []
        tid = _text(problems, "ticket_id", ticket_id, TICKET_ID_MAX, single_line=True)
        if tid and not any(p.startswith("ticket_id") for p in problems) and not TICKET_ID_RE.fullmatch(tid):
            problems.append("ticket_id must look like TKT-2025-001234 (TKT- then letters, digits and dashes), "
                            f"got {_shown(ticket_id)}")
        cid = _text(problems, "customer_id", customer_id, CUSTOMER_ID_MAX, single_line=True)
        email = customer_email.strip() if isinstance(customer_email, str) else None
        if email is None or not EMAIL_RE.fullmatch(email) or len(email) > 254:
            problems.append(f"customer_email must be an email address such as customer@example.com, "
                            f"got {_shown(customer_email)}")
        q = _text(problems, "query", query, QUERY_MAX, single_line=False)
        uc = use_case.strip().upper() if isinstance(use_case, str) else None
        if uc not in USE_CASES:
            problems.append(f"use_case must be 'UC2' or 'UC3', got {_shown(use_case)}")
        why = _text(problems, "reason", reason, REASON_MAX, single_line=False)
        if problems:
            raise InvalidRequest(problems)
        return cls(ticket_id=tid, customer_id=cid, customer_email=email or "", query=q, use_case=uc or "",
                   reason=why)

    @property
    def use_case_name(self) -> str:
        return USE_CASES[self.use_case]


@dataclass(frozen=True, slots=True)
class RenderedEmail:
    subject: str
    text: str
    html: str


@dataclass(frozen=True, slots=True)
class OutgoingEmail:
    """One message as every backend needs it; headers are plain single-line strings."""

    sender: str
    sender_name: str
    to: str
    subject: str
    text: str
    html: str
    headers: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        # Header injection guard for every backend (the SMTP path would also be refused by
        # the email package, ACS would not).
        fields = [("subject", self.subject), ("to", self.to), ("sender", self.sender),
                  ("sender_name", self.sender_name)]
        fields += [(f"header {name}", f"{name}: {value}") for name, value in self.headers]
        for name, value in fields:
            if "\r" in value or "\n" in value:
                raise ValueError(f"email {name} must be a single line (CR/LF found)")


@dataclass(frozen=True, slots=True)
class DeliveryOutcome:
    """What the retry loop reports for one message."""

    ok: bool
    attempts: int
    provider_message_id: str = ""
    error: str = ""


@dataclass(frozen=True, slots=True)
class DeliveryRecord:
    """One row of the tracking store: one message of one sendemail call, in the caller's tenant.

    ``tenant_id`` scopes every lookup and is never reported back (it is the caller's own).
    """

    email_id: str
    tenant_id: str
    role: Role
    ticket_id: str
    use_case: str
    recipient: str
    backend: str
    attempts: int
    status: MessageStatus
    provider_message_id: str
    provider_status: str
    created_at: str
    updated_at: str
    sent_at: str
    delivered_at: str
    last_error: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "recipient": self.recipient,
            "backend": self.backend,
            "status": self.status,
            "attempts": self.attempts,
            "provider_message_id": self.provider_message_id or None,
            "provider_status": self.provider_status or None,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "sent_at": self.sent_at or None,
            "delivered_at": self.delivered_at or None,
            "last_error": self.last_error or None,
        }


def overall_status(statuses: Sequence[MessageStatus]) -> CallStatus:
    """sent / partial / failed for a call; delivered once every message is confirmed."""
    if any(s == "pending" for s in statuses):
        return "pending"
    failed = sum(s == "failed" for s in statuses)
    if failed == len(statuses):
        return "failed"
    if failed:
        return "partial"
    if all(s == "delivered" for s in statuses):
        return "delivered"
    return "sent"


@dataclass(frozen=True, slots=True)
class SendResult:
    email_id: str
    status: CallStatus
    sent_at: str
    backend: str
    recipients: dict[Role, str] = field(default_factory=dict)
    errors: dict[Role, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "email_id": self.email_id,
            "status": self.status,
            "sent_at": self.sent_at,
            "recipients": dict(self.recipients),
            "backend": self.backend,
            "errors": dict(self.errors),
        }


@dataclass(frozen=True, slots=True)
class ProviderStatus:
    """What a provider says about a message it accepted (ACS only)."""

    status: MessageStatus  # sent (still in flight), delivered or failed
    provider_status: str  # the provider's own word, e.g. Running, Succeeded
    error: str = ""
