"""The five email tools, and the :class:`Mailer` they share.

Everything the model writes is untrusted: every address is validated (no CR/LF or other control
character reaches a header), recipients are counted and checked against an optional domain
allowlist, and attachments are only files inside the attachments folder, resolved with their
real path so neither ``..`` nor a symlink can reach another file on the server.

With no SMTP server configured, mail goes to the outbox folder as ``.eml`` files and the result
says so, so the model never claims a message reached a mailbox when it did not.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import mimetypes
import os
import re
import stat
from dataclasses import dataclass
from email.headerregistry import Address
from email.message import EmailMessage
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from msev15.agent.tools.registry import Tool, ToolContext, ToolError
from msev15.config import Settings
from msev15.mail import DeliveryError, OutboxTransport, SmtpTransport, Transport, send_with_retries

log = logging.getLogger("agent.email")

MAX_SUBJECT = 998  # RFC 5322 line limit
MAX_BODY = 100_000
MAX_ADDRESS_FIELD = 4000
MAX_ATTACHMENTS = 10
_OUTBOX_NOTE = ("No SMTP server is configured, so the message was saved to the local outbox folder; "
                "it has not reached the recipient's mailbox.")

# C0/C1 controls and the Unicode line separators: anything a header writer might treat as a line end.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_LOCAL = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")
_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
_NAMED = re.compile(r"(?P<name>[^<>\"]*)<(?P<addr>[^<>]*)>")
_HOST_LABEL = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9])?")


@dataclass(frozen=True, slots=True)
class Recipient:
    display_name: str
    address: str  # local@domain, domain lower-cased and IDNA-encoded

    @property
    def domain(self) -> str:
        return self.address.rpartition("@")[2]


def _parse_address(field: str, raw: str) -> Recipient:
    """One ``local@domain`` or ``Name <local@domain>``; raises ToolError naming the field."""
    text = raw.strip()
    named = _NAMED.fullmatch(text)
    name, addr = (named["name"].strip(), named["addr"].strip()) if named else ("", text)
    local, at, domain = addr.rpartition("@")
    try:
        domain = domain.encode("idna").decode("ascii").lower() if domain else ""
    except UnicodeError:
        domain = ""
    labels = domain.split(".")
    if (not at or len(local) > 64 or not _LOCAL.fullmatch(local) or len(labels) < 2 or len(domain) > 253
            or not all(_LABEL.fullmatch(label) for label in labels)):
        raise ToolError(f"'{field}' has an invalid address: {raw.strip()!r}")
    return Recipient(name, f"{local}@{domain}")


def _no_control(field: str, value: str) -> str:
    if _CONTROL.search(value):
        raise ToolError(f"'{field}' contains a line break or control character; "
                        "header injection is not allowed")
    return value


def _parse_field(field: str, value: str | None, required: bool = False) -> list[Recipient]:
    value = _no_control(field, value or "")
    parts = [p for p in re.split(r"[,;]", value) if p.strip()]
    if required and not parts:
        raise ToolError(f"'{field}' needs at least one recipient address")
    return [_parse_address(field, part) for part in parts]


def _single_line(field: str, value: str) -> str:
    if not _no_control(field, value).strip():
        raise ToolError(f"'{field}' is empty")
    return value.strip()


class _TextFromHtml(HTMLParser):
    """A readable plain-text alternative for HTML mail (clients without HTML, spam filters)."""

    _BREAKS = {"br", "tr", "p", "div", "h1", "h2", "h3", "h4", "h5", "h6", "table", "ul", "ol"}
    _BLOCKS = {"p", "div", "h1", "h2", "h3", "h4", "h5", "h6", "table", "ul", "ol"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("script", "style"):
            self._skip += 1
        elif tag == "li":
            self.parts.append("\n- ")
        elif tag in self._BREAKS:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style"):
            self._skip = max(0, self._skip - 1)
        elif tag in self._BLOCKS:
            self.parts.append("\n\n")

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data)


def html_to_text(html: str) -> str:
    parser = _TextFromHtml()
    parser.feed(html)
    parser.close()
    lines = (" ".join(line.split()) for line in "".join(parser.parts).splitlines())
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


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
                 problem: str | None = None) -> None:
        self.transport = None if problem else transport
        self.problem = problem
        self.sender = Address(display_name=sender_name, addr_spec=sender_email or "noreply@localhost")
        self.max_recipients = max_recipients
        self.allowed_domains = tuple(d.lower() for d in allowed_domains)
        self.attachments_dir = Path(attachments_dir)
        self.max_attachment_bytes = max_attachment_bytes
        self.attempts = attempts
        self.base_delay = base_delay

    @classmethod
    def from_settings(cls, settings: Settings, *, attempts: int = 3, base_delay: float = 1.0) -> Mailer:
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
                   attempts=attempts, base_delay=base_delay, problem=problem)

    @property
    def status(self) -> str:
        """``configured`` (SMTP), ``outbox`` (no SMTP server set) or ``invalid`` (tools disabled)."""
        if self.transport is None:
            return "invalid"
        return "configured" if self.transport.name == "smtp" else "outbox"

    # --- validation ---------------------------------------------------------------------------

    def recipients(self, to: str, cc: str | None, bcc: str | None) -> dict[str, list[Recipient]]:
        fields = {"to": _parse_field("to", to, required=True), "cc": _parse_field("cc", cc),
                  "bcc": _parse_field("bcc", bcc)}
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

    def _read_attachments(self, names: list[str]) -> list[_Attachment]:
        """Runs in a worker thread: realpath containment, then read through one checked fd."""
        base = Path(os.path.realpath(self.attachments_dir))
        if not base.is_dir():
            raise ToolError("attachments are not available: the attachments folder does not exist")
        found = []
        for name in names:
            shown = repr(_CONTROL.sub("?", name))
            if _CONTROL.search(name) or not name.strip():
                raise ToolError(f"attachment {shown} is not a valid file name")
            target = Path(os.path.realpath(base / name))
            if os.path.isabs(name) or target == base or not target.is_relative_to(base):
                raise ToolError(f"attachment {shown} is outside the attachments folder")
            found.append(_Attachment(Path(name).name, self._read_one(target, shown)))
        return found

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
        subject = _single_line("subject", subject)
        if not body.strip():
            raise ToolError("'body' is empty")
        files = await asyncio.to_thread(self._read_attachments, attachments) if attachments else []

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
            mime = mimetypes.guess_type(item.filename)[0] or "application/octet-stream"
            maintype, subtype = mime.split("/", 1)
            message.add_attachment(item.data, maintype=maintype, subtype=subtype, filename=item.filename)

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


def _valid_host(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        pass
    return len(host) <= 253 and all(_HOST_LABEL.fullmatch(label) for label in host.split("."))


def _config_problem(settings: Settings) -> str | None:
    """Why the email settings cannot work, as one sentence for the log and banner (None if fine)."""
    if settings.smtp_server:
        if not _valid_host(settings.smtp_server):
            return (f"SMTP_SERVER must be a host name or IP address without a scheme or port "
                    f"(got {settings.smtp_server!r}; the port goes in SMTP_PORT); email tools are disabled")
        if not settings.sender_email:
            return ("SMTP_SERVER is set but SENDER_EMAIL is empty (it is the From address); "
                    "email tools are disabled")
    elif not settings.email_outbox_dir.strip():
        return ("EMAIL_OUTBOX_DIR is empty and no SMTP_SERVER is set, so mail has nowhere to go; "
                "email tools are disabled")
    return None


# --- the tools ------------------------------------------------------------------------------------

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
                    "description": "File names inside the shop's attachments folder, e.g. "
                                   "'invoices/INV-1001.pdf'. Only files in that folder can be sent."},
}, ("to", "subject", "body", "attachments"))
CONNECTION_SCHEMA = _schema({}, ())

_AFTER = (" The result says whether the email was sent and how it was delivered; if it was only saved to "
          "the outbox, or NOT sent, tell the customer honestly. Only write to addresses the customer gave "
          "you or that come from their order; never guess an address.")
_SENDERS = {  # name: (description, schema)
    "send_email": ("Send an email from the customer-service mailbox, with optional cc, bcc and HTML. Use it "
                   "to email a customer something they asked for (an order confirmation, a summary, an "
                   "answer in writing)." + _AFTER, SEND_SCHEMA),
    "send_text_email": ("Send a plain-text email: the simplest way to email a customer when no formatting "
                        "is needed." + _AFTER, TEXT_SCHEMA),
    "send_html_email": ("Send an HTML-formatted email (headings, tables, bold text, links). A plain-text "
                        "version is added automatically unless you give text_body." + _AFTER, HTML_SCHEMA),
    "send_email_with_attachments": ("Send an email with files attached from the shop's attachments folder "
                                    "(invoices, manuals, return labels). Give file names relative to that "
                                    "folder; other files on the server cannot be attached." + _AFTER,
                                    ATTACHMENTS_SCHEMA),
}
_CONNECTION = ("Check whether email can be sent right now: connects (and logs in) to the SMTP server without "
               "sending anything, or checks the outbox folder when no SMTP server is configured. Use it when "
               "sending failed or someone asks whether email works.")


def email_tools(mailer: Mailer) -> list[Tool]:
    """The five email tools bound to ``mailer``; none when its configuration is invalid."""
    if mailer.status == "invalid":
        return []

    async def send(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
        # One implementation: each schema admits only its own fields (the registry checks them first).
        html_body = args.get("html_body")
        return await mailer.send(
            ctx, to=args["to"], subject=args["subject"],
            body=args["body"] if html_body is None else html_body,
            cc=args.get("cc"), bcc=args.get("bcc"), html=html_body is not None or bool(args.get("html")),
            text_alternative=args.get("text_body"), attachments=args.get("attachments"))

    async def test_connection(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
        return await mailer.test_connection()

    tools = [Tool(name, description, schema, send) for name, (description, schema) in _SENDERS.items()]
    return [*tools, Tool("test_connection", _CONNECTION, CONNECTION_SCHEMA, test_connection)]
