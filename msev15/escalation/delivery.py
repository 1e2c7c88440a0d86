"""Delivery backends and delivery with retries.

A backend turns an :class:`OutgoingEmail` into a provider message once (``prepare``), then
``send``s that same prepared message on every attempt, so a retry keeps its Message-ID (SMTP,
outbox) or operation id (ACS, which makes a retried request idempotent there).
SMTP and the outbox use the shared :mod:`msev15.common.mail` transports; ACS lives in
:mod:`msev15.escalation.acs`. Every backend raises :class:`msev15.common.mail.DeliveryError`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from email.message import EmailMessage
from email.utils import formataddr, make_msgid
from typing import Any, Protocol

from msev15.common.mail import DeliveryError, OutboxTransport, SmtpTransport, Transport
from msev15.common.retry import retry
from msev15.escalation.config import EscalationSettings
from msev15.escalation.models import DeliveryOutcome, OutgoingEmail, ProviderStatus

log = logging.getLogger("escalation.delivery")

__all__ = ["Backend", "ProviderStatus", "TransportBackend", "build_backend", "deliver", "DeliveryError",
           "failure_message"]


class Backend(Protocol):
    name: str
    description: str  # for logs and /health; never holds a secret

    def prepare(self, email: OutgoingEmail, key: str) -> Any: ...

    async def send(self, prepared: Any) -> str:
        """Deliver (or hand over) the message; returns the provider's message id."""

    async def poll(self, provider_message_id: str) -> ProviderStatus | None:
        """The provider's latest word on a sent message, or None when it has nothing more to say."""

    async def check(self) -> None: ...

    async def close(self) -> None: ...


def build_message(email: OutgoingEmail, key: str) -> EmailMessage:
    """A multipart/alternative message (text first, HTML preferred) with a stable Message-ID."""
    msg = EmailMessage()
    msg["From"] = formataddr((email.sender_name, email.sender)) if email.sender_name else email.sender
    msg["To"] = email.to
    msg["Subject"] = email.subject
    domain = email.sender.rpartition("@")[2] or "localhost"
    msg["Message-ID"] = make_msgid(idstring=key, domain=domain)
    for name, value in email.headers:
        msg[name] = value
    msg.set_content(email.text)
    msg.add_alternative(email.html, subtype="html")
    return msg


class TransportBackend:
    """SMTP or the file outbox, through a :mod:`msev15.common.mail` transport."""

    def __init__(self, transport: Transport, description: str) -> None:
        self.transport = transport
        self.name = transport.name
        self.description = description

    def prepare(self, email: OutgoingEmail, key: str) -> EmailMessage:
        return build_message(email, key)

    async def send(self, prepared: EmailMessage) -> str:
        return await self.transport.send(prepared)

    async def poll(self, provider_message_id: str) -> ProviderStatus | None:
        return None  # SMTP and the outbox report nothing after accepting a message

    async def check(self) -> None:
        await self.transport.check()

    async def close(self) -> None:
        return None


def build_backend(settings: EscalationSettings) -> Backend:
    """ACS when a connection string is set, else SMTP when SMTP_SERVER is set, else the outbox."""
    per_try = settings.email_timeout_seconds
    if settings.backend == "acs":
        from msev15.escalation.acs import AcsBackend

        connection = settings.acs_connection
        assert connection is not None
        return AcsBackend(connection, timeout=per_try)
    if settings.backend == "smtp":
        transport = SmtpTransport(settings.smtp_server, settings.smtp_port, username=settings.sender_email,
                                  password=settings.sender_password, timeout=per_try)
        login = "with login" if settings.sender_password else "no login"
        return TransportBackend(transport, f"SMTP {settings.smtp_server}:{settings.smtp_port} "
                                           f"({transport.security}, {login})")
    return TransportBackend(OutboxTransport(settings.email_outbox_dir), f"file outbox {settings.email_outbox_dir}")


def failure_message(attempts: int, error: str) -> str:
    return f"Failed to deliver email after {attempts} {'retry' if attempts == 1 else 'retries'}: {error}"


def _transient(exc: Exception) -> bool:
    return isinstance(exc, DeliveryError) and exc.transient


def _describe(backend: Backend, exc: Exception) -> str:
    if isinstance(exc, TimeoutError):
        return f"{backend.name} did not answer within the EMAIL_TIMEOUT_SECONDS budget"
    if isinstance(exc, DeliveryError):
        return str(exc)
    return f"{backend.name} backend error: {type(exc).__name__}: {exc}"


async def deliver(backend: Backend, prepared: Any, *, attempts: int, base_delay: float, deadline: float,
                  on_failure: Callable[[int, str], Awaitable[None]] | None = None) -> DeliveryOutcome:
    """Send with retries (:func:`msev15.common.retry.retry`): transient failures wait
    ``base_delay`` x 1, 2, 4 ... between attempts.

    ``deadline`` (loop time) bounds everything: an attempt is cut at the deadline and no retry
    starts whose backoff would end past it. Never raises for a delivery problem; the outcome says
    what happened, ending in "Failed to deliver email after N retries: <last error>".
    """
    failed, error = 0, "no attempt was made: the time budget was already spent"

    async def send(attempt: int) -> DeliveryOutcome:
        return DeliveryOutcome(ok=True, attempts=attempt, provider_message_id=await backend.send(prepared))

    async def record(attempt: int, exc: Exception) -> None:
        nonlocal failed, error
        if not isinstance(exc, (DeliveryError, TimeoutError)):  # a bug or an unexpected library error
            log.error("%s backend failed unexpectedly", backend.name, exc_info=exc)
        failed, error = attempt, _describe(backend, exc)
        if on_failure is not None:
            await on_failure(attempt, error)

    try:
        return await retry(send, attempts=attempts, base_delay=base_delay, retryable=_transient, log=log,
                           what=backend.name, deadline=deadline, on_failure=record)
    except Exception as exc:
        if failed and failed < attempts and _transient(exc):  # retryable, but the budget was spent
            error += " (no time left for another attempt within EMAIL_TIMEOUT_SECONDS)"
        return DeliveryOutcome(ok=False, attempts=failed, error=failure_message(failed, error))
