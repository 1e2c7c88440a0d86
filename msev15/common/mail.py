"""Mail delivery shared by the agent's email tools and the escalation service.

Two transports with one contract (``name``, ``send``, ``check``): :class:`SmtpTransport` over
aiosmtplib, and :class:`OutboxTransport`, which writes ``.eml`` files to a folder when no SMTP
server is configured (nothing is lost, and the files can be inspected or replayed).
Both raise :class:`DeliveryError`, whose ``transient`` flag drives :func:`send_with_retries`
(through :func:`msev15.common.retry.retry`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import ssl
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import formatdate, make_msgid, parseaddr
from pathlib import Path
from typing import Literal, Protocol

import aiosmtplib

from msev15.common.mailguard import HeaderInjection, verify_message
from msev15.common.retry import retry

log = logging.getLogger("mail.transport")

Security = Literal["starttls", "tls", "plain"]


class DeliveryError(Exception):
    """The message was not delivered. ``transient`` says whether trying again may help."""

    def __init__(self, message: str, *, transient: bool, attempts: int = 1) -> None:
        super().__init__(message)
        self.transient = transient
        self.attempts = attempts


class Transport(Protocol):
    name: str

    async def send(self, message: EmailMessage) -> str: ...

    async def check(self) -> None: ...


def _prepare(message: EmailMessage) -> str:
    """Give the message a Message-ID (kept across retries) and a Date; return the ID.

    A message whose headers do not read back as they were set is never sent (the last line of
    defence; callers check first, see :mod:`msev15.common.mailguard`)."""
    try:
        verify_message(message)
    except HeaderInjection as exc:
        raise DeliveryError(f"refused to send: {exc}", transient=False) from None
    if not message["Date"]:
        message["Date"] = formatdate(usegmt=True)
    if not message["Message-ID"]:
        # An explicit domain: make_msgid() would otherwise call the blocking socket.getfqdn().
        domain = parseaddr(str(message.get("From", "")))[1].rpartition("@")[2] or "localhost"
        message["Message-ID"] = make_msgid(domain=domain)
    return str(message["Message-ID"])


def security_for_port(port: int) -> Security:
    """587 is submission with STARTTLS, 465 is implicit TLS, anything else a plain local relay."""
    security: dict[int, Security] = {587: "starttls", 465: "tls"}
    return security.get(port, "plain")


def _delivery_error(exc: Exception, where: str) -> DeliveryError:
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        codes = [r.code for r in exc.recipients]
        detail = ", ".join(f"{r.recipient} ({r.code} {r.message})" for r in exc.recipients)
        return DeliveryError(f"{where} refused every recipient: {detail}",
                             transient=all(400 <= c < 500 for c in codes))
    if isinstance(exc, aiosmtplib.SMTPAuthenticationError):
        return DeliveryError(f"{where} rejected the login: {exc.code} {exc.message}", transient=False)
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return DeliveryError(f"{where} answered {exc.code} {exc.message}", transient=400 <= exc.code < 500)
    if isinstance(exc, ssl.SSLError) or isinstance(exc.__cause__, ssl.SSLError):
        return DeliveryError(f"TLS with {where} failed: {exc}", transient=False)
    if isinstance(exc, (ConnectionError, TimeoutError, OSError)):
        # Refused, reset, timed out, disconnected: the server may be back in a moment.
        return DeliveryError(f"cannot reach {where}: {exc}", transient=True)
    return DeliveryError(f"{where}: {exc}", transient=False)  # e.g. STARTTLS/AUTH not supported


class SmtpTransport:
    """One SMTP connection per message: simple, and nothing stale to keep alive between sends.

    ``security`` defaults from the port (see :func:`security_for_port`); ``tls_context`` lets a
    deployment trust a private CA. Login happens only when a password is set.
    """

    name = "smtp"

    def __init__(self, host: str, port: int, username: str = "", password: str = "", timeout: float = 30.0,
                 *, security: Security | None = None, tls_context: ssl.SSLContext | None = None) -> None:
        self.host = host
        self.port = port
        self.username = username
        self.password = password
        self.timeout = timeout
        self.security: Security = security or security_for_port(port)
        self.tls_context = tls_context

    def __repr__(self) -> str:
        return f"SmtpTransport({self.host}:{self.port}, {self.security}, login={bool(self.password)})"

    def _client(self) -> aiosmtplib.SMTP:
        return aiosmtplib.SMTP(
            hostname=self.host,
            port=self.port,
            username=(self.username or None) if self.password else None,
            password=self.password or None,
            timeout=self.timeout,
            use_tls=self.security == "tls",
            # True demands STARTTLS (never silently send in clear); False keeps plain relays plain.
            start_tls=self.security == "starttls",
            tls_context=self.tls_context,
        )

    async def send(self, message: EmailMessage) -> str:
        message_id = _prepare(message)
        try:
            async with self._client() as smtp:
                refused, _ = await smtp.send_message(message)
        except (aiosmtplib.SMTPException, OSError) as exc:
            raise _delivery_error(exc, f"SMTP server {self.host}:{self.port}") from exc
        if refused:
            log.warning("message %s: server refused some recipients: %s", message_id,
                        ", ".join(f"{rcpt} ({resp.code})" for rcpt, resp in refused.items()))
        return message_id

    async def check(self) -> None:
        try:
            async with self._client() as smtp:
                if smtp.is_ehlo_or_helo_needed:
                    await smtp.ehlo()
        except (aiosmtplib.SMTPException, OSError) as exc:
            raise _delivery_error(exc, f"SMTP server {self.host}:{self.port}") from exc


class OutboxTransport:
    """Writes each message to ``<UTC timestamp>-<short id>.eml``; readers never see half a file.

    The file keeps the Bcc header (unlike SMTP delivery), since it is the only record of who
    the message was for.
    """

    name = "outbox"

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)

    def __repr__(self) -> str:
        return f"OutboxTransport({str(self.directory)!r})"

    def _write(self, data: bytes) -> Path:
        self.directory.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        path = self.directory / f"{stamp}-{secrets.token_hex(4)}.eml"
        tmp = path.with_name(f".{path.name}.tmp")
        try:
            with open(tmp, "xb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return path

    def _probe(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        if not os.access(self.directory, os.W_OK | os.X_OK):
            raise PermissionError(f"no write permission on {str(self.directory)!r}")

    async def send(self, message: EmailMessage) -> str:
        message_id = _prepare(message)
        try:
            path = await asyncio.to_thread(self._write, message.as_bytes())
        except OSError as exc:
            raise DeliveryError(f"cannot write to the outbox folder: {exc}", transient=False) from exc
        log.info("message %s written to %s", message_id, path.name)
        return message_id

    async def check(self) -> None:
        try:
            await asyncio.to_thread(self._probe)
        except OSError as exc:
            raise DeliveryError(f"the outbox folder is not writable: {exc}", transient=False) from exc


def _transient(exc: Exception) -> bool:
    return isinstance(exc, DeliveryError) and exc.transient


async def send_with_retries(transport: Transport, message: EmailMessage, attempts: int = 3,
                            base_delay: float = 1.0) -> str:
    """Send, retrying transient failures after ``base_delay``, 2x, 4x ... seconds.

    The final :class:`DeliveryError` carries how many attempts were made.
    """

    async def count(attempt: int, exc: Exception) -> None:
        if isinstance(exc, DeliveryError):
            exc.attempts = attempt

    return await retry(lambda _: transport.send(message), attempts=attempts, base_delay=base_delay,
                       retryable=_transient, on_failure=count, log=log, what=f"{transport.name} delivery")
