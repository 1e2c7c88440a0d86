"""The five email tools, sending through a real aiosmtpd server on loopback (or the outbox)."""

from __future__ import annotations

import email
import json
import os
import re
import socket
from collections.abc import AsyncIterator, Callable
from email import policy
from email.message import EmailMessage, MIMEPart
from pathlib import Path
from typing import Any

import pytest

from msev15.agent.tools.email import email_tools
from msev15.agent.tools.mailer import MAX_BODY, MAX_SUBJECT, Mailer, html_to_text
from msev15.agent.tools.registry import Tool, ToolContext, ToolError, ToolRegistry
from msev15.config import Settings
from tests.smtp_server import RecordingSMTP

TENANT, OTHER_TENANT = "acme", "globex"
CTX = ToolContext(tenant_id=TENANT, session_id="s-1", request_id="r-1")
OTHER_CTX = ToolContext(tenant_id=OTHER_TENANT, session_id="s-2", request_id="r-2")
NAMES = ["send_email", "send_text_email", "send_html_email", "send_email_with_attachments", "test_connection"]

MakeMailer = Callable[..., Mailer]


@pytest.fixture
async def smtp() -> AsyncIterator[RecordingSMTP]:
    async with RecordingSMTP() as server:
        yield server


@pytest.fixture
def attachments_root(tmp_path: Path) -> Path:
    """EMAIL_ATTACHMENTS_DIR: one folder per tenant inside."""
    return tmp_path / "attachments"


@pytest.fixture
def attachments(attachments_root: Path) -> Path:
    """The calling tenant's (``acme``'s) attachments folder."""
    folder = attachments_root / TENANT
    (folder / "invoices").mkdir(parents=True)
    (folder / "invoices" / "INV-1001.pdf").write_bytes(b"%PDF-1.4 fake invoice \x00\xff")
    (folder / "returns.txt").write_bytes(b"Return within 30 days.\n")
    (attachments_root.parent / "secret.txt").write_text("server secret")
    return folder


@pytest.fixture
def make_mailer(tmp_path: Path, smtp: RecordingSMTP, attachments_root: Path, attachments: Path) -> MakeMailer:
    def make(**overrides: Any) -> Mailer:
        values: dict[str, Any] = {
            "smtp_server": smtp.host, "smtp_port": smtp.port, "sender_email": "support@shop.test",
            "sender_name": "Shop Support", "email_outbox_dir": str(tmp_path / "outbox"),
            "email_attachments_dir": str(attachments_root), "smtp_timeout_seconds": 5.0,
        }
        values.update(overrides)
        return Mailer.from_settings(Settings.defaults(**values), base_delay=0)

    return make


def _text(part: MIMEPart | None) -> str:
    """A text part's content with SMTP's CRLF line ends made plain."""
    assert part is not None, "the message has no such part"
    return part.get_content().replace("\r\n", "\n").strip()


def _tools(mailer: Mailer) -> dict[str, Tool]:
    return {tool.name: tool for tool in email_tools(mailer)}


async def _call(mailer: Mailer, name: str, *, ctx: ToolContext = CTX, **args: Any) -> Any:
    return await _tools(mailer)[name].func(ctx, args)


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- configuration ----------------------------------------------------------------------------


def test_smtp_server_set_means_configured(make_mailer: MakeMailer) -> None:
    mailer = make_mailer()
    assert mailer.status == "configured" and mailer.problem is None
    assert [t.name for t in email_tools(mailer)] == NAMES


def test_no_smtp_server_means_outbox(make_mailer: MakeMailer) -> None:
    mailer = make_mailer(smtp_server="")
    assert mailer.status == "outbox" and mailer.problem is None
    assert [t.name for t in email_tools(mailer)] == NAMES


def test_smtp_without_sender_email_is_invalid(make_mailer: MakeMailer) -> None:
    mailer = make_mailer(sender_email="")
    assert mailer.status == "invalid"
    assert mailer.problem is not None and "SENDER_EMAIL is empty" in mailer.problem
    assert email_tools(mailer) == []


@pytest.mark.parametrize("server",
                         ["smtp.gmail.com:587", "smtp://mail.test", "mail host", "-bad-.test", "[::1]"])
def test_malformed_smtp_server_is_invalid(make_mailer: MakeMailer, server: str) -> None:
    mailer = make_mailer(smtp_server=server)
    assert mailer.status == "invalid"
    assert mailer.problem is not None and "SMTP_SERVER must be a host name" in mailer.problem
    assert email_tools(mailer) == []


@pytest.mark.parametrize("server", ["smtp.gmail.com", "localhost", "10.0.0.5", "::1", "mail_relay"])
def test_well_formed_smtp_servers_are_accepted(make_mailer: MakeMailer, server: str) -> None:
    assert make_mailer(smtp_server=server).status == "configured"


def test_empty_outbox_dir_without_smtp_is_invalid(make_mailer: MakeMailer) -> None:
    mailer = make_mailer(smtp_server="", email_outbox_dir=" ")
    assert mailer.status == "invalid"
    assert mailer.problem is not None and "EMAIL_OUTBOX_DIR is empty" in mailer.problem


async def test_invalid_mailer_refuses_to_send(make_mailer: MakeMailer, smtp: RecordingSMTP) -> None:
    mailer = make_mailer(sender_email="")
    with pytest.raises(ToolError, match="email is disabled: SMTP_SERVER is set but SENDER_EMAIL is empty"):
        await mailer.send(CTX, to="alice@example.com", subject="Hi", body="Hello")
    assert smtp.attempts == 0


async def test_invalid_mailer_reports_why_on_test_connection(make_mailer: MakeMailer) -> None:
    result = await make_mailer(sender_email="").test_connection()
    assert result["ok"] is False and result["delivery"] == "disabled"
    assert "SENDER_EMAIL is empty" in result["error"]


def test_schemas_are_strict_and_bounded(make_mailer: MakeMailer) -> None:
    for tool in email_tools(make_mailer()):
        assert tool.parameters["additionalProperties"] is False
        assert tool.description and len(tool.description) > 60
        props = tool.parameters["properties"]
        if "subject" in props:
            assert props["subject"]["maxLength"] == MAX_SUBJECT == 998
            assert {"to", "subject"} <= set(tool.parameters["required"])
        for body in ("body", "html_body"):
            if body in props:
                assert props[body]["maxLength"] == MAX_BODY == 100_000


# --- sending over SMTP --------------------------------------------------------------------------


async def test_send_email_delivers_to_every_recipient_and_hides_bcc(make_mailer: MakeMailer,
                                                                   smtp: RecordingSMTP) -> None:
    result = await _call(make_mailer(), "send_email", to="alice@example.com, Bob Smith <bob@example.com>",
                         subject="Your order ORD-1", body="Your order has shipped.", cc="carol@example.com",
                         bcc="audit@shop.test")
    [received] = await smtp.wait_for(1)
    assert received.mail_from == "support@shop.test"
    assert sorted(received.rcpt_tos) == ["alice@example.com", "audit@shop.test", "bob@example.com",
                                         "carol@example.com"]
    msg = received.message
    assert msg["From"] == "Shop Support <support@shop.test>"
    assert msg["To"] == "alice@example.com, Bob Smith <bob@example.com>"
    assert msg["Cc"] == "carol@example.com"
    assert msg["Bcc"] is None and b"audit@shop.test" not in received.data
    assert msg["Subject"] == "Your order ORD-1"
    assert msg.get_content_type() == "text/plain"
    assert _text(msg) == "Your order has shipped."
    assert result == {
        "sent": True, "delivery": "smtp", "message_id": msg["Message-ID"],
        "recipients": ["alice@example.com", "bob@example.com", "carol@example.com", "audit@shop.test"],
        "to": ["alice@example.com", "bob@example.com"], "cc": ["carol@example.com"], "bcc": ["audit@shop.test"],
        "subject": "Your order ORD-1",
    }


async def test_send_email_html_flag_sends_html_with_a_text_alternative(make_mailer: MakeMailer,
                                                                       smtp: RecordingSMTP) -> None:
    html = "<h1>Order shipped</h1><p>Track it <a href='https://t.test/1'>here</a>.</p>"
    await _call(make_mailer(), "send_email", to="alice@example.com", subject="Shipped", body=html, html=True)
    [received] = await smtp.wait_for(1)
    msg = received.message
    assert msg.get_content_type() == "multipart/alternative"
    assert _text(msg.get_body(("plain",))) == "Order shipped\n\nTrack it here."
    assert _text(msg.get_body(("html",))) == html


def test_html_to_text_keeps_the_words_and_drops_scripts_and_styles() -> None:
    html = ("<html><head><style>p {color: red}</style><script>alert(1)</script></head><body>"
            "<h2>Hello&nbsp;Alice</h2><p>Your order:</p><ul><li>Laptop</li><li>Mouse</li></ul>"
            "<p>Thanks<br>The shop</p></body></html>")
    assert html_to_text(html) == "Hello Alice\n\nYour order:\n\n- Laptop\n- Mouse\n\nThanks\nThe shop"


async def test_send_text_email(make_mailer: MakeMailer, smtp: RecordingSMTP) -> None:
    result = await _call(make_mailer(), "send_text_email", to="alice@example.com", subject="Hi",
                         body="Plain ü")
    [received] = await smtp.wait_for(1)
    assert received.rcpt_tos == ("alice@example.com",)
    assert received.message.get_content_type() == "text/plain"
    assert _text(received.message) == "Plain ü"
    assert result["sent"] is True


async def test_send_html_email_uses_the_given_text_body(make_mailer: MakeMailer, smtp: RecordingSMTP) -> None:
    await _call(make_mailer(), "send_html_email", to="alice@example.com", subject="News",
                html_body="<p><b>Big</b> news</p>", text_body="Big news (text)")
    [received] = await smtp.wait_for(1)
    msg = received.message
    assert _text(msg.get_body(("plain",))) == "Big news (text)"
    assert _text(msg.get_body(("html",))) == "<p><b>Big</b> news</p>"


async def test_send_email_with_attachments(make_mailer: MakeMailer, smtp: RecordingSMTP,
                                           attachments: Path) -> None:
    result = await _call(make_mailer(), "send_email_with_attachments", to="alice@example.com",
                         subject="Your invoice", body="Attached.",
                         attachments=["invoices/INV-1001.pdf", "returns.txt"])
    [received] = await smtp.wait_for(1)
    msg = received.message
    assert msg.get_content_type() == "multipart/mixed"
    assert _text(msg.get_body(("plain",))) == "Attached."
    parts = {part.get_filename(): part for part in msg.iter_attachments()}
    assert set(parts) == {"INV-1001.pdf", "returns.txt"}
    assert parts["INV-1001.pdf"].get_content_type() == "application/pdf"
    pdf = (attachments / "invoices" / "INV-1001.pdf").read_bytes()
    assert parts["INV-1001.pdf"].get_payload(decode=True) == pdf
    assert parts["returns.txt"].get_payload(decode=True) == b"Return within 30 days.\n"
    assert result["attachments"] == [{"filename": "INV-1001.pdf", "bytes": len(pdf)},
                                     {"filename": "returns.txt", "bytes": 23}]


async def test_attachment_symlink_inside_the_folder_is_allowed(make_mailer: MakeMailer, smtp: RecordingSMTP,
                                                               attachments: Path) -> None:
    (attachments / "latest.pdf").symlink_to(attachments / "invoices" / "INV-1001.pdf")
    await _call(make_mailer(), "send_email_with_attachments", to="alice@example.com", subject="Invoice",
                body="Attached.", attachments=["latest.pdf"])
    [received] = await smtp.wait_for(1)
    [part] = received.message.iter_attachments()
    assert part.get_filename() == "latest.pdf"
    assert part.get_payload(decode=True) == b"%PDF-1.4 fake invoice \x00\xff"


async def test_duplicate_recipients_are_sent_once(make_mailer: MakeMailer, smtp: RecordingSMTP) -> None:
    result = await _call(make_mailer(), "send_email", to="alice@example.com; ALICE@example.com",
                         subject="Hi", body="Hello", cc="alice@example.com", bcc="alice@EXAMPLE.com")
    [received] = await smtp.wait_for(1)
    assert received.rcpt_tos == ("alice@example.com",)
    assert result["cc"] == [] and result["bcc"] == []


async def test_international_domain_is_sent_as_punycode(make_mailer: MakeMailer, smtp: RecordingSMTP) -> None:
    result = await _call(make_mailer(), "send_text_email", to="info@bücher.de", subject="Hi", body="Hello")
    [received] = await smtp.wait_for(1)
    assert received.rcpt_tos == ("info@xn--bcher-kva.de",)
    assert result["to"] == ["info@xn--bcher-kva.de"]


async def test_login_uses_sender_email_and_password(make_mailer: MakeMailer) -> None:
    async with RecordingSMTP(auth=("support@shop.test", "app-password")) as server:
        mailer = make_mailer(smtp_port=server.port, sender_password="app-password")
        await _call(mailer, "send_text_email", to="alice@example.com", subject="Hi", body="Hello")
        [received] = await server.wait_for(1)
    assert received.login == "support@shop.test"


async def test_through_the_registry_the_result_is_json(make_mailer: MakeMailer, smtp: RecordingSMTP) -> None:
    registry = ToolRegistry(timeout=10)
    registry.add_many(email_tools(make_mailer()))
    result = await registry.call("send_text_email", json.dumps(
        {"to": "alice@example.com", "subject": "Hi", "body": "Hello"}), CTX)
    assert result.ok is True
    assert json.loads(result.content)["sent"] is True
    await smtp.wait_for(1)


async def test_registry_rejects_unknown_and_oversized_arguments(make_mailer: MakeMailer,
                                                                smtp: RecordingSMTP) -> None:
    registry = ToolRegistry(timeout=10)
    registry.add_many(email_tools(make_mailer()))
    extra = await registry.call("send_text_email", {"to": "a@example.com", "subject": "Hi", "body": "x",
                                                    "reply_to": "evil@example.com"}, CTX)
    long_subject = await registry.call("send_text_email", {"to": "a@example.com", "subject": "x" * 999,
                                                           "body": "x"}, CTX)
    assert extra.ok is False and "reply_to" in extra.content
    assert long_subject.ok is False and "subject" in long_subject.content
    assert smtp.attempts == 0


# --- delivery failures and retries --------------------------------------------------------------


async def test_transient_failures_are_retried_until_sent(make_mailer: MakeMailer) -> None:
    async with RecordingSMTP(fail_first=2, fail_code=421) as server:
        result = await _call(make_mailer(smtp_port=server.port), "send_text_email", to="alice@example.com",
                             subject="Hi", body="Hello")
        [received] = await server.wait_for(1)
    assert server.attempts == 3
    assert result["sent"] is True and result["message_id"] == received.message["Message-ID"]


async def test_permanent_rejection_is_not_sent_and_not_retried(make_mailer: MakeMailer) -> None:
    async with RecordingSMTP(fail_first=5, fail_code=554, fail_text="Message rejected as spam") as server:
        with pytest.raises(ToolError, match=r"NOT sent after 1 attempt\(s\).*554 Message rejected as spam"
                                            r".*will not help"):
            await _call(make_mailer(smtp_port=server.port), "send_text_email", to="alice@example.com",
                        subject="Hi", body="Hello")
    assert server.attempts == 1 and server.messages == []


async def test_smtp_down_is_not_sent_after_three_attempts(make_mailer: MakeMailer, closed_port: int) -> None:
    with pytest.raises(ToolError, match=r"The email was NOT sent after 3 attempt\(s\): "
                                        r"cannot reach SMTP server.*"
                                        r"try again later"):
        await _call(make_mailer(smtp_port=closed_port), "send_text_email", to="alice@example.com",
                    subject="Hi", body="Hello")


async def test_test_connection_against_a_live_server(make_mailer: MakeMailer, smtp: RecordingSMTP) -> None:
    result = await _call(make_mailer(), "test_connection")
    assert result == {"ok": True, "delivery": "smtp", "server": f"127.0.0.1:{smtp.port}", "security": "plain",
                      "login": False}
    assert smtp.attempts == 0


async def test_test_connection_with_smtp_down(make_mailer: MakeMailer, closed_port: int) -> None:
    result = await _call(make_mailer(smtp_port=closed_port), "test_connection")
    assert result["ok"] is False and result["delivery"] == "smtp"
    assert "cannot reach SMTP server" in result["error"]


# --- the outbox ---------------------------------------------------------------------------------


async def test_outbox_writes_eml_files(make_mailer: MakeMailer, tmp_path: Path) -> None:
    mailer = make_mailer(smtp_server="")
    result = await _call(mailer, "send_email_with_attachments", to="alice@example.com", subject="Invoice",
                         body="<p>Attached</p>", html=True, bcc="audit@shop.test", attachments=["returns.txt"])
    [path] = (tmp_path / "outbox").glob("*.eml")
    msg = email.message_from_bytes(path.read_bytes(), policy=policy.default)
    assert isinstance(msg, EmailMessage)
    assert msg["Message-ID"] == result["message_id"]
    assert msg["To"] == "alice@example.com" and msg["Bcc"] == "audit@shop.test"
    assert _text(msg.get_body(("html",))) == "<p>Attached</p>"
    assert [p.get_filename() for p in msg.iter_attachments()] == ["returns.txt"]
    assert result["sent"] is True and result["delivery"] == "outbox"
    assert "has not reached the recipient's mailbox" in result["note"]


async def test_test_connection_in_outbox_mode(make_mailer: MakeMailer, tmp_path: Path) -> None:
    result = await _call(make_mailer(smtp_server=""), "test_connection")
    assert result["ok"] is True and result["delivery"] == "outbox"
    assert (tmp_path / "outbox").is_dir()


# --- rejected input (nothing is sent) -------------------------------------------------------------


@pytest.mark.parametrize("field", ["to", "cc", "bcc"])
async def test_line_break_in_an_address_field_is_rejected(make_mailer: MakeMailer, smtp: RecordingSMTP,
                                                          field: str) -> None:
    args: dict[str, Any] = {"to": "alice@example.com", "subject": "Hi", "body": "Hello",
                            field: "alice@example.com\r\nBcc: victim@example.com"}
    with pytest.raises(ToolError, match=f"'{field}' contains a line break or control character"):
        await _call(make_mailer(), "send_email", **args)
    assert smtp.attempts == 0


async def test_line_break_in_subject_is_rejected(make_mailer: MakeMailer, smtp: RecordingSMTP) -> None:
    with pytest.raises(ToolError, match="'subject' contains a line break"):
        await _call(make_mailer(), "send_email", to="alice@example.com", subject="Hi\nBcc: victim@example.com",
                    body="Hello")
    assert smtp.attempts == 0


@pytest.mark.parametrize("separator", ["\u2028", "\x85", "\t", "\x00"])
async def test_other_line_separators_in_subject_are_rejected(make_mailer: MakeMailer, smtp: RecordingSMTP,
                                                             separator: str) -> None:
    with pytest.raises(ToolError, match="'subject' contains a line break or control character"):
        await _call(make_mailer(), "send_email", to="alice@example.com",
                    subject=f"Hi{separator}Bcc: x@example.com", body="Hello")
    assert smtp.attempts == 0


async def test_blank_subject_is_rejected(make_mailer: MakeMailer, smtp: RecordingSMTP) -> None:
    with pytest.raises(ToolError, match="'subject' is empty"):
        await _call(make_mailer(), "send_email", to="alice@example.com", subject="   ", body="Hello")
    assert smtp.attempts == 0


async def test_blank_body_is_rejected(make_mailer: MakeMailer, smtp: RecordingSMTP) -> None:
    with pytest.raises(ToolError, match="'body' is empty"):
        await _call(make_mailer(), "send_email", to="alice@example.com", subject="Hi", body=" \n ")
    assert smtp.attempts == 0


@pytest.mark.parametrize("bad", ["bob@", "not-an-address", "bob@localhost", "bob smith@example.com",
                                 "bob@exa_mple.com", "<bob@example.com", "bob..x@example.com", "@example.com",
                                 "bob@exa..mple.com"])
async def test_invalid_address_is_rejected(make_mailer: MakeMailer, smtp: RecordingSMTP, bad: str) -> None:
    with pytest.raises(ToolError, match=f"'to' has an invalid address: {bad!r}"):
        await _call(make_mailer(), "send_email", to=f"alice@example.com, {bad}", subject="Hi", body="Hello")
    assert smtp.attempts == 0


async def test_invalid_cc_address_names_the_field(make_mailer: MakeMailer, smtp: RecordingSMTP) -> None:
    with pytest.raises(ToolError, match="'cc' has an invalid address: 'carol@'"):
        await _call(make_mailer(), "send_email", to="alice@example.com", cc="carol@", subject="Hi",
                    body="Hello")
    assert smtp.attempts == 0


async def test_no_recipient_is_rejected(make_mailer: MakeMailer, smtp: RecordingSMTP) -> None:
    with pytest.raises(ToolError, match="'to' needs at least one recipient address"):
        await _call(make_mailer(), "send_email", to=" , ;", subject="Hi", body="Hello")
    assert smtp.attempts == 0


async def test_too_many_recipients_are_rejected(make_mailer: MakeMailer, smtp: RecordingSMTP) -> None:
    mailer = make_mailer(email_max_recipients=3)
    with pytest.raises(ToolError, match=r"too many recipients: 4 \(to, cc and bcc together\), the limit is 3"):
        await _call(mailer, "send_email", to="a@example.com, b@example.com", cc="c@example.com",
                    bcc="d@example.com", subject="Hi", body="Hello")
    assert smtp.attempts == 0


async def test_recipients_at_the_limit_are_accepted(make_mailer: MakeMailer, smtp: RecordingSMTP) -> None:
    mailer = make_mailer(email_max_recipients=3)
    await _call(mailer, "send_email", to="a@example.com, b@example.com", bcc="c@example.com", subject="Hi",
                body="Hello")
    [received] = await smtp.wait_for(1)
    assert len(received.rcpt_tos) == 3


async def test_disallowed_recipient_domain_is_rejected(make_mailer: MakeMailer, smtp: RecordingSMTP) -> None:
    mailer = make_mailer(email_allowed_domains=("example.com",))
    with pytest.raises(ToolError, match=re.escape("recipient domain x.com is not allowed")):
        await _call(mailer, "send_email", to="alice@example.com", bcc="spy@x.com", subject="Hi", body="Hello")
    assert smtp.attempts == 0


async def test_allowed_domain_and_its_subdomains_are_accepted(make_mailer: MakeMailer,
                                                              smtp: RecordingSMTP) -> None:
    mailer = make_mailer(email_allowed_domains=("example.com",))
    await _call(mailer, "send_email", to="alice@example.com, bob@eu.example.com", subject="Hi", body="Hello")
    [received] = await smtp.wait_for(1)
    assert sorted(received.rcpt_tos) == ["alice@example.com", "bob@eu.example.com"]


async def test_lookalike_domain_is_not_a_subdomain(make_mailer: MakeMailer, smtp: RecordingSMTP) -> None:
    mailer = make_mailer(email_allowed_domains=("example.com",))
    with pytest.raises(ToolError, match=re.escape("recipient domain badexample.com is not allowed")):
        await _call(mailer, "send_email", to="alice@badexample.com", subject="Hi", body="Hello")
    assert smtp.attempts == 0


async def _attach(mailer: Mailer, *names: str, ctx: ToolContext = CTX) -> Any:
    return await _call(mailer, "send_email_with_attachments", ctx=ctx, to="alice@example.com", subject="Files",
                       body="Attached.", attachments=list(names))


async def _refusal(mailer: Mailer, *names: str, ctx: ToolContext = CTX) -> str:
    with pytest.raises(ToolError) as caught:
        await _attach(mailer, *names, ctx=ctx)
    return str(caught.value)


@pytest.mark.parametrize("name",
                         ["a/../../etc/passwd", "../secret.txt", "invoices/../../secret.txt", "/etc/passwd"])
async def test_attachment_path_traversal_is_rejected(make_mailer: MakeMailer, smtp: RecordingSMTP,
                                                     name: str) -> None:
    with pytest.raises(ToolError, match=f"attachment {name!r} is outside the attachments folder"):
        await _attach(make_mailer(), name)
    assert smtp.attempts == 0


async def test_attachment_symlink_escape_is_rejected(make_mailer: MakeMailer, smtp: RecordingSMTP,
                                                     attachments: Path, tmp_path: Path) -> None:
    (attachments / "innocent.txt").symlink_to(tmp_path / "secret.txt")
    with pytest.raises(ToolError, match=re.escape("attachment 'innocent.txt' is outside the attachments folder")):
        await _attach(make_mailer(), "innocent.txt")
    assert smtp.attempts == 0


async def test_attachment_through_a_symlinked_folder_escape_is_rejected(
        make_mailer: MakeMailer, smtp: RecordingSMTP, attachments: Path, tmp_path: Path) -> None:
    (attachments / "shared").symlink_to(tmp_path, target_is_directory=True)
    with pytest.raises(ToolError, match=re.escape("attachment 'shared/secret.txt' is outside the attachments folder")):
        await _attach(make_mailer(), "shared/secret.txt")
    assert smtp.attempts == 0


async def test_oversized_attachment_is_rejected(make_mailer: MakeMailer, smtp: RecordingSMTP) -> None:
    with pytest.raises(ToolError, match=re.escape("attachment 'returns.txt' is 23 bytes, over the 20 byte limit")):
        await _attach(make_mailer(email_max_attachment_bytes=20), "returns.txt")
    assert smtp.attempts == 0


async def test_attachment_at_the_size_limit_is_accepted(make_mailer: MakeMailer, smtp: RecordingSMTP) -> None:
    await _attach(make_mailer(email_max_attachment_bytes=23), "returns.txt")
    await smtp.wait_for(1)


async def test_directory_attachment_is_rejected(make_mailer: MakeMailer, smtp: RecordingSMTP) -> None:
    with pytest.raises(ToolError, match="attachment 'invoices' is a folder, not a file"):
        await _attach(make_mailer(), "invoices")
    assert smtp.attempts == 0


async def test_attachments_folder_itself_is_rejected(make_mailer: MakeMailer, smtp: RecordingSMTP) -> None:
    with pytest.raises(ToolError, match=re.escape("attachment 'invoices/..' is outside the attachments folder")):
        await _attach(make_mailer(), "invoices/..")
    assert smtp.attempts == 0


async def test_missing_attachment_is_rejected(make_mailer: MakeMailer, smtp: RecordingSMTP) -> None:
    with pytest.raises(ToolError, match=re.escape("attachment 'nope.pdf' does not exist in the attachments folder")):
        await _attach(make_mailer(), "returns.txt", "nope.pdf")
    assert smtp.attempts == 0


async def test_fifo_attachment_is_rejected_without_blocking(make_mailer: MakeMailer, smtp: RecordingSMTP,
                                                            attachments: Path) -> None:
    os.mkfifo(attachments / "pipe")
    with pytest.raises(ToolError, match="attachment 'pipe' is not a regular file"):
        await _attach(make_mailer(), "pipe")
    assert smtp.attempts == 0


async def test_control_character_in_attachment_name_is_rejected(make_mailer: MakeMailer,
                                                                smtp: RecordingSMTP) -> None:
    with pytest.raises(ToolError, match=r"attachment 'a\?b\.txt' is not a valid file name"):
        await _attach(make_mailer(), "a\nb.txt")
    assert smtp.attempts == 0


async def test_missing_attachments_folder_is_reported(make_mailer: MakeMailer, smtp: RecordingSMTP,
                                                      tmp_path: Path) -> None:
    mailer = make_mailer(email_attachments_dir=str(tmp_path / "absent"))
    with pytest.raises(ToolError, match="the attachments folder does not exist"):
        await _attach(mailer, "returns.txt")
    assert smtp.attempts == 0


# --- attachments are per tenant -----------------------------------------------------------------

@pytest.fixture
def other_attachments(attachments_root: Path, attachments: Path) -> Path:
    """The other tenant's (``globex``'s) folder, next to acme's."""
    folder = attachments_root / OTHER_TENANT
    folder.mkdir()
    (folder / "brochure.txt").write_bytes(b"Globex brochure\n")
    return folder


async def test_each_tenant_sends_from_its_own_folder(make_mailer: MakeMailer, smtp: RecordingSMTP,
                                                     other_attachments: Path) -> None:
    mailer = make_mailer()
    await _attach(mailer, "returns.txt")
    await _attach(mailer, "brochure.txt", ctx=OTHER_CTX)
    first, second = await smtp.wait_for(2)
    assert [p.get_payload(decode=True) for p in first.message.iter_attachments()] == [b"Return within 30 days.\n"]
    assert [p.get_payload(decode=True) for p in second.message.iter_attachments()] == [b"Globex brochure\n"]


async def test_another_tenant_cannot_attach_a_file_by_its_name(make_mailer: MakeMailer, smtp: RecordingSMTP,
                                                               other_attachments: Path) -> None:
    mailer = make_mailer()
    foreign = await _refusal(mailer, "invoices/INV-1001.pdf", ctx=OTHER_CTX)  # exists in acme's folder only
    missing = await _refusal(mailer, "invoices/INV-9999.pdf", ctx=OTHER_CTX)  # exists nowhere
    assert foreign == "attachment 'invoices/INV-1001.pdf' does not exist in the attachments folder"
    assert foreign.replace("INV-1001", "INV-9999") == missing
    assert smtp.attempts == 0


async def test_another_tenant_cannot_reach_a_file_by_traversal(make_mailer: MakeMailer, smtp: RecordingSMTP,
                                                               other_attachments: Path) -> None:
    mailer = make_mailer()
    existing = await _refusal(mailer, f"../{TENANT}/returns.txt", ctx=OTHER_CTX)
    absent = await _refusal(mailer, f"../{TENANT}/nope.txt", ctx=OTHER_CTX)
    assert existing == f"attachment '../{TENANT}/returns.txt' is outside the attachments folder"
    assert existing.replace("returns", "nope") == absent  # no hint whether the other tenant has the file
    assert smtp.attempts == 0


async def test_symlink_from_one_tenant_to_another_tenants_file_is_refused(
        make_mailer: MakeMailer, smtp: RecordingSMTP, attachments: Path, other_attachments: Path) -> None:
    (other_attachments / "latest.pdf").symlink_to(attachments / "invoices" / "INV-1001.pdf")
    with pytest.raises(ToolError, match=re.escape("attachment 'latest.pdf' is outside the attachments folder")):
        await _attach(make_mailer(), "latest.pdf", ctx=OTHER_CTX)
    assert smtp.attempts == 0


async def test_tenant_folder_that_is_a_link_is_refused(make_mailer: MakeMailer, smtp: RecordingSMTP,
                                                       attachments_root: Path, attachments: Path) -> None:
    (attachments_root / OTHER_TENANT).symlink_to(attachments, target_is_directory=True)
    message = await _refusal(make_mailer(), "returns.txt", ctx=OTHER_CTX)
    assert message == (f"attachments are not available for tenant {OTHER_TENANT!r}: its attachments folder must "
                       "be a real folder, not a link")
    assert smtp.attempts == 0


async def test_tenant_without_a_folder_has_no_attachments(make_mailer: MakeMailer, smtp: RecordingSMTP) -> None:
    message = await _refusal(make_mailer(), "returns.txt", ctx=OTHER_CTX)
    assert message == f"no attachments are available for tenant {OTHER_TENANT!r}: it has no attachments folder"
    assert smtp.attempts == 0


async def test_traversal_is_refused_as_such_without_a_tenant_folder(make_mailer: MakeMailer,
                                                                    smtp: RecordingSMTP) -> None:
    message = await _refusal(make_mailer(), f"../{TENANT}/returns.txt", ctx=OTHER_CTX)
    assert message == f"attachment '../{TENANT}/returns.txt' is outside the attachments folder"
    assert smtp.attempts == 0


@pytest.mark.parametrize("tenant", ["", ".", "..", "../acme", "acme/..", "a/b", "a\\b", "a..b", "a\x00b"])
async def test_tenant_id_that_is_not_one_path_segment_is_refused(make_mailer: MakeMailer, smtp: RecordingSMTP,
                                                                 tenant: str) -> None:
    # The service's id rule never lets such an id through; this is the last line of defence.
    message = await _refusal(make_mailer(), "returns.txt", ctx=ToolContext(tenant, "s-3"))
    assert message == "attachments are not available for this tenant: its id cannot name a folder"
    assert smtp.attempts == 0


def test_attachment_tool_says_names_are_relative_to_the_tenants_folder(make_mailer: MakeMailer) -> None:
    tool = _tools(make_mailer())["send_email_with_attachments"]
    assert "this customer's (tenant's) own attachments folder" in tool.description
    assert "(tenant's) own attachments folder" in tool.parameters["properties"]["attachments"]["description"]
