"""The :class:`Mailer` the email tools share: validation, message building, delivery.

The tools themselves (their names, schemas and how their arguments reach the mailer) are in
:mod:`msev15.agent.tools.email`. Recipient and header checks live in
:mod:`msev15.agent.tools.addresses`, and :func:`html_to_text` in :mod:`msev15.agent.tools.html_text`.

Everything the model writes is untrusted: every address is validated (no CR/LF or other control
character reaches a header), recipients are counted and checked against an optional domain
allowlist, and attachments are only files inside the calling tenant's own folder
(``<attachments folder>/<tenant_id>/``), resolved with their real path so neither ``..`` nor a
symlink can reach another tenant's files or any other file on the server.

With no SMTP server configured, mail goes to the outbox folder as ``.eml`` files and the result
says so, so the model never claims a message reached a mailbox when it did not.
"""

from __future__ import annotations

import asyncio
import logging
import mimetypes
import os
import stat
from dataclasses import dataclass
from email.headerregistry import Address
from email.message import EmailMessage
from pathlib import Path
from typing import Any, Literal

from msev15.agent.tools.addresses import (
    CONTROL,
    Recipient,
    parse_field,
    single_line,
    valid_host,
)
from msev15.agent.tools.email_schemas import (
    MAX_BODY,
    MAX_SUBJECT,
)
from msev15.agent.tools.html_text import html_to_text
from msev15.agent.tools.registry import ToolContext, ToolError
from msev15.agent.tools.send_limits import SendLimiter
from msev15.common.mail import (
    DeliveryError,
    OutboxTransport,
    SmtpTransport,
    Transport,
    send_with_retries,
)
from msev15.common.mailguard import HeaderInjection, header_text_problem, verify_message
from msev15.config import Settings

__all__ = ["MAX_BODY", "MAX_SUBJECT", "Mailer", "MailerStatus", "Recipient", "html_to_text"]

log = logging.getLogger("agent.email")

MailerStatus = Literal["configured", "outbox", "invalid"]

_OUTBOX_NOTE = ("No SMTP server is configured, so the message was saved to the local outbox folder; "
                "it has not reached the recipient's mailbox.")


@dataclass(frozen=True, slots=True)
class _Attachment:
    filename: str
    data: bytes


class Mailer:
    """Validates, builds and delivers the agent's mail. ``status`` is for readiness and the banner."""

    def __init__(self, transport: Transport | None, *, sender_email: str, sender_name: str = "",
                 max_recipients: int = 20, allowed_domains: tuple[str, ...] = (),
                 attachments_dir: str | Path = "./data/attachments",
                 max_attachment_bytes: int = 10 * 1024 * 1024, attempts: int = 3, base_delay: float = 1.0,
                 problem: str | None = None, max_per_tenant_per_hour: int = 0,
                 limiter: SendLimiter | None = None) -> None:
        self.transport = None if problem else transport
        self.problem = problem
        self.sender = Address(display_name=sender_name, addr_spec=sender_email or "noreply@localhost")
        self.max_recipients = max_recipients
        self.allowed_domains = tuple(d.lower() for d in allowed_domains)
        self.attachments_dir = Path(attachments_dir)
        self.max_attachment_bytes = max_attachment_bytes
        self.attempts = attempts
        self.base_delay = base_delay
        self.limiter = limiter or SendLimiter(max_per_tenant_per_hour)

    @classmethod
    def from_settings(cls, settings: Settings, *, attempts: int = 3, base_delay: float = 1.0,
                      limiter: SendLimiter | None = None) -> Mailer:
        """``limiter``: the per-tenant hourly send limit (the topology's, shared when it is);
        in memory when not given."""
        problem = _config_problem(settings)
        transport: Transport
        if settings.smtp_server:
            transport = SmtpTransport(settings.smtp_server, settings.smtp_port, settings.sender_email,
                                      settings.sender_password, settings.smtp_timeout_seconds)
        else:
            transport = OutboxTransport(settings.email_outbox_dir)
        return cls(transport, sender_email=settings.sender_email, sender_name=settings.sender_name,
                   max_recipients=settings.email_max_recipients,
                   allowed_domains=settings.email_allowed_domains,
                   attachments_dir=settings.email_attachments_dir,
                   max_attachment_bytes=settings.email_max_attachment_bytes,
                   attempts=attempts, base_delay=base_delay, problem=problem,
                   max_per_tenant_per_hour=settings.email_max_per_tenant_per_hour, limiter=limiter)

    @property
    def status(self) -> MailerStatus:
        """``configured`` (SMTP), ``outbox`` (no SMTP server set) or ``invalid`` (tools disabled)."""
        if self.transport is None:
            return "invalid"
        return "configured" if self.transport.name == "smtp" else "outbox"

    # --- validation ---------------------------------------------------------------------------

    def recipients(self, to: str, cc: str | None, bcc: str | None) -> dict[str, list[Recipient]]:
        fields = {"to": parse_field("to", to, required=True), "cc": parse_field("cc", cc),
                  "bcc": parse_field("bcc", bcc)}
        seen: set[str] = set()
        for name, found in fields.items():  # one copy per address; the first field wins
            unique = []
            for r in found:
                if r.address.lower() not in seen:
                    seen.add(r.address.lower())
                    unique.append(r)
            fields[name] = unique
        total = sum(len(found) for found in fields.values())
        if total > self.max_recipients:
            raise ToolError(f"too many recipients: {total} (to, cc and bcc together), the limit is "
                            f"{self.max_recipients}")
        for r in (r for found in fields.values() for r in found):
            if self.allowed_domains and not any(r.domain == d or r.domain.endswith("." + d)
                                                for d in self.allowed_domains):
                raise ToolError(f"recipient domain {r.domain} is not allowed; allowed domains: "
                                + ", ".join(self.allowed_domains))
        return fields

    def _tenant_folder(self, tenant_id: str) -> Path:
        """``<attachments folder>/<tenant_id>``, real path; ToolError if it cannot be the tenant's own.

        The tenant id already follows the service's id rule, so it is one safe path segment; it is
        checked again here because this is where it becomes a path. The tenant's folder must be a
        real folder directly inside the attachments folder: a link there could hand one tenant
        another tenant's files (or any folder on the server).
        """
        root = Path(os.path.realpath(self.attachments_dir))
        if not root.is_dir():
            raise ToolError("attachments are not available: the attachments folder does not exist")
        if (tenant_id in ("", ".") or "/" in tenant_id or "\\" in tenant_id
                or ".." in tenant_id or CONTROL.search(tenant_id)):
            log.error("refusing attachments for tenant id %r: it cannot name a folder", tenant_id)
            raise ToolError("attachments are not available for this tenant: its id cannot name a folder")
        folder = root / tenant_id
        if Path(os.path.realpath(folder)) != folder:
            log.warning("attachments folder %s is a link; attachments are refused for tenant %s", folder, tenant_id)
            raise ToolError(f"attachments are not available for tenant {tenant_id!r}: its attachments folder "
                            "must be a real folder, not a link")
        return folder

    def _read_attachments(self, tenant_id: str, names: list[str]) -> list[_Attachment]:
        """Runs in a worker thread: realpath containment in the tenant's folder, then read through
        one checked fd. Names are checked before the folder's existence, so a name that points
        outside is refused as such whether or not the tenant has attachments."""
        base = self._tenant_folder(tenant_id)
        targets = []
        for name in names:
            shown = repr(CONTROL.sub("?", name))
            if CONTROL.search(name) or not name.strip():
                raise ToolError(f"attachment {shown} is not a valid file name")
            target = Path(os.path.realpath(base / name))
            if os.path.isabs(name) or target == base or not target.is_relative_to(base):
                raise ToolError(f"attachment {shown} is outside the attachments folder")
            targets.append((name, target, shown))
        if not base.is_dir():
            raise ToolError(f"no attachments are available for tenant {tenant_id!r}: it has no attachments folder")
        return [_Attachment(Path(name).name, self._read_one(target, shown)) for name, target, shown in targets]

    def _read_one(self, path: Path, shown: str) -> bytes:
        try:
            # O_NOFOLLOW and O_NONBLOCK: a file swapped for a symlink or a FIFO after the check
            # fails here instead of escaping or hanging the worker.
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except FileNotFoundError:
            raise ToolError(f"attachment {shown} does not exist in the attachments folder") from None
        except IsADirectoryError:
            raise ToolError(f"attachment {shown} is a folder, not a file") from None
        except OSError as exc:
            raise ToolError(f"attachment {shown} cannot be read ({exc.strerror})") from None
        try:
            info = os.fstat(fd)
            if stat.S_ISDIR(info.st_mode):
                raise ToolError(f"attachment {shown} is a folder, not a file")
            if not stat.S_ISREG(info.st_mode):
                raise ToolError(f"attachment {shown} is not a regular file")
        except BaseException:
            os.close(fd)
            raise
        with os.fdopen(fd, "rb") as fh:
            data = fh.read(self.max_attachment_bytes + 1)
        if info.st_size > self.max_attachment_bytes or len(data) > self.max_attachment_bytes:
            raise ToolError(f"attachment {shown} is {max(info.st_size, len(data))} bytes, over the "
                            f"{self.max_attachment_bytes} byte limit")
        return data

    # --- sending ------------------------------------------------------------------------------

    async def send(self, ctx: ToolContext, *, to: str, subject: str, body: str, cc: str | None = None,
                   bcc: str | None = None, html: bool = False, text_alternative: str | None = None,
                   attachments: list[str] | None = None) -> dict[str, Any]:
        """Validate everything, then deliver with retries. Raises ToolError when not sent."""
        if self.transport is None:
            raise ToolError(f"email is disabled: {self.problem}")
        fields = self.recipients(to, cc, bcc)
        subject = single_line("subject", subject)
        if not body.strip():
            raise ToolError("'body' is empty")
        files = await asyncio.to_thread(self._read_attachments, ctx.tenant_id, attachments) if attachments else []

        message = EmailMessage()
        message["From"] = self.sender
        for name in ("to", "cc", "bcc"):
            if fields[name]:
                message[name.capitalize()] = [Address(r.display_name, addr_spec=r.address)
                                              for r in fields[name]]
        message["Subject"] = subject
        if html:
            message.set_content(text_alternative if text_alternative and text_alternative.strip()
                                else html_to_text(body) or " ")
            message.add_alternative(body, subtype="html")
        else:
            message.set_content(body)
        for item in files:
            problem = header_text_problem(item.filename)
            if problem:
                raise ToolError(f"attachment {item.filename!r}: its file name {problem}; header injection "
                                "is not allowed")
            mime = mimetypes.guess_type(item.filename)[0] or "application/octet-stream"
            maintype, subtype = mime.split("/", 1)
            message.add_attachment(item.data, maintype=maintype, subtype=subtype, filename=item.filename)
        try:
            verify_message(message)  # built, serialized, parsed back: exactly the headers we set
        except HeaderInjection as exc:
            raise ToolError(str(exc)) from None
        wait = await self.limiter.take(ctx.tenant_id)
        if wait is not None:
            log.warning("email NOT sent (tenant=%s session=%s): the hourly limit of %d messages is reached",
                        ctx.tenant_id, ctx.session_id, self.limiter.per_hour)
            raise ToolError(f"The email was NOT sent: this customer account may send at most "
                            f"{self.limiter.per_hour} emails per hour; the next one can go in about "
                            f"{max(1, round(wait / 60))} minute(s).")

        try:
            message_id = await send_with_retries(self.transport, message, self.attempts, self.base_delay)
        except DeliveryError as exc:
            log.warning("email NOT sent (tenant=%s session=%s) after %d attempt(s): %s",
                        ctx.tenant_id, ctx.session_id, exc.attempts, exc)
            advice = ("The problem looks temporary; you may offer to try again later."
                      if exc.transient else "Trying again will not help until the problem is fixed.")
            raise ToolError(f"The email was NOT sent after {exc.attempts} attempt(s): {exc}. {advice}") \
                from exc
        recipients = [r.address for found in fields.values() for r in found]
        log.info("email %s via %s (tenant=%s session=%s): %d recipient(s), %d attachment(s)",
                 message_id, self.transport.name, ctx.tenant_id, ctx.session_id, len(recipients), len(files))
        result: dict[str, Any] = {
            "sent": True, "delivery": self.transport.name, "message_id": message_id,
            "recipients": recipients, **{name: [r.address for r in found] for name, found in fields.items()},
            "subject": subject,
        }
        if files:
            result["attachments"] = [{"filename": f.filename, "bytes": len(f.data)} for f in files]
        if self.transport.name == "outbox":
            result["note"] = _OUTBOX_NOTE
        return result

    async def test_connection(self) -> dict[str, Any]:
        if self.transport is None:
            return {"ok": False, "delivery": "disabled", "error": self.problem}
        result: dict[str, Any] = {"delivery": self.transport.name}
        if isinstance(self.transport, SmtpTransport):
            result.update(server=f"{self.transport.host}:{self.transport.port}",
                          security=self.transport.security, login=bool(self.transport.password))
        else:
            result["note"] = ("No SMTP server is configured; messages are saved as .eml files in the "
                              "outbox folder.")
        try:
            await self.transport.check()
        except DeliveryError as exc:
            return {"ok": False, **result, "error": str(exc)}
        return {"ok": True, **result}



def _config_problem(settings: Settings) -> str | None:
    """Why the email settings cannot work, as one sentence for the log and banner (None if fine)."""
    if settings.smtp_server:
        if not valid_host(settings.smtp_server):
            return (f"SMTP_SERVER must be a host name or IP address without a scheme or port "
                    f"(got {settings.smtp_server!r}; the port goes in SMTP_PORT); email tools are disabled")
        if not settings.sender_email:
            return ("SMTP_SERVER is set but SENDER_EMAIL is empty (it is the From address); "
                    "email tools are disabled")
    elif not settings.email_outbox_dir.strip():
        return ("EMAIL_OUTBOX_DIR is empty and no SMTP_SERVER is set, so mail has nowhere to go; "
                "email tools are disabled")
    return None
