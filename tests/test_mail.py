"""The shared mail transports, against a real aiosmtpd server on loopback and real folders."""

from __future__ import annotations

import email
import socket
import ssl
from email import policy
from email.message import EmailMessage
from pathlib import Path

import pytest

from msev15.common.mail import (
    DeliveryError,
    OutboxTransport,
    SmtpTransport,
    security_for_port,
    send_with_retries,
)
from tests.smtp_server import RecordingSMTP, make_tls_contexts


def _message(**headers: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "Support <support@shop.test>"
    msg["To"] = "alice@example.com"
    msg["Subject"] = "Your order"
    for name, value in headers.items():
        msg[name.replace("_", "-")] = value
    msg.set_content("Hello Alice")
    return msg


@pytest.fixture
def tls() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(server, client) contexts for a fresh self-signed certificate."""
    pytest.importorskip("cryptography", reason="the TLS wire tests make a certificate with cryptography")
    return make_tls_contexts()


@pytest.fixture
def closed_port() -> int:
    """A loopback port nobody listens on (connections are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- SMTP -----------------------------------------------------------------------------------


async def test_smtp_send_delivers_envelope_and_returns_message_id() -> None:
    async with RecordingSMTP() as smtp:
        transport = SmtpTransport(smtp.host, smtp.port, timeout=5)
        message_id = await transport.send(_message(Cc="bob@example.com", Bcc="carol@example.com"))
        [received] = await smtp.wait_for(1)
    assert transport.name == "smtp"
    assert received.mail_from == "support@shop.test"
    assert sorted(received.rcpt_tos) == ["alice@example.com", "bob@example.com", "carol@example.com"]
    parsed = received.message
    assert parsed["Message-ID"] == message_id and message_id.endswith("@shop.test>")
    assert parsed["Bcc"] is None
    assert parsed["Date"]
    assert parsed.get_content().strip() == "Hello Alice"
    assert received.login is None and received.tls is False


async def test_smtp_send_keeps_an_existing_message_id() -> None:
    async with RecordingSMTP() as smtp:
        message_id = await SmtpTransport(smtp.host, smtp.port).send(_message(Message_ID="<fixed@shop.test>"))
        [received] = await smtp.wait_for(1)
    assert message_id == "<fixed@shop.test>" == received.message["Message-ID"]


async def test_smtp_logs_in_when_a_password_is_set() -> None:
    async with RecordingSMTP(auth=("support@shop.test", "s3cret")) as smtp:
        await SmtpTransport(smtp.host, smtp.port, "support@shop.test", "s3cret").send(_message())
        [received] = await smtp.wait_for(1)
    assert received.login == "support@shop.test"


async def test_smtp_wrong_password_is_a_permanent_failure() -> None:
    async with RecordingSMTP(auth=("support@shop.test", "s3cret")) as smtp:
        with pytest.raises(DeliveryError, match="rejected the login") as info:
            await SmtpTransport(smtp.host, smtp.port, "support@shop.test", "wrong").send(_message())
    assert info.value.transient is False
    assert smtp.messages == []


async def test_smtp_without_login_is_refused_by_a_server_requiring_auth() -> None:
    async with RecordingSMTP(auth=("u", "p")) as smtp:
        with pytest.raises(DeliveryError) as info:
            await SmtpTransport(smtp.host, smtp.port).send(_message())
    assert info.value.transient is False
    assert "530" in str(info.value)


async def test_smtp_refused_port_is_transient(closed_port: int) -> None:
    with pytest.raises(DeliveryError, match=f"cannot reach SMTP server 127.0.0.1:{closed_port}") as info:
        await SmtpTransport("127.0.0.1", closed_port, timeout=2).send(_message())
    assert info.value.transient is True


async def test_smtp_4xx_is_transient() -> None:
    async with RecordingSMTP(fail_first=1, fail_code=421) as smtp:
        with pytest.raises(DeliveryError, match="answered 421") as info:
            await SmtpTransport(smtp.host, smtp.port).send(_message())
    assert info.value.transient is True


async def test_smtp_5xx_is_permanent() -> None:
    async with RecordingSMTP(fail_first=1, fail_code=554, fail_text="Message rejected") as smtp:
        with pytest.raises(DeliveryError, match="answered 554 Message rejected") as info:
            await SmtpTransport(smtp.host, smtp.port).send(_message())
    assert info.value.transient is False


async def test_smtp_every_recipient_refused_is_not_delivered() -> None:
    async with RecordingSMTP(refuse_recipients={"alice@example.com": 550}) as smtp:
        with pytest.raises(DeliveryError, match=r"refused every recipient: alice@example\.com \(550") as info:
            await SmtpTransport(smtp.host, smtp.port).send(_message())
    assert info.value.transient is False
    assert smtp.attempts == 0


async def test_smtp_recipients_refused_with_4xx_are_transient() -> None:
    async with RecordingSMTP(refuse_recipients={"alice@example.com": 450}) as smtp:
        with pytest.raises(DeliveryError) as info:
            await SmtpTransport(smtp.host, smtp.port).send(_message())
    assert info.value.transient is True


async def test_smtp_partly_refused_recipients_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    async with RecordingSMTP(refuse_recipients={"bob@example.com": 550}) as smtp:
        await SmtpTransport(smtp.host, smtp.port).send(_message(Cc="bob@example.com"))
        [received] = await smtp.wait_for(1)
    assert received.rcpt_tos == ("alice@example.com",)
    assert "refused some recipients: bob@example.com (550)" in caplog.text


async def test_smtp_check_succeeds_against_a_live_server() -> None:
    async with RecordingSMTP(auth=("u", "p")) as smtp:
        await SmtpTransport(smtp.host, smtp.port, "u", "p").check()
    assert smtp.messages == []


async def test_smtp_check_fails_on_refused_port(closed_port: int) -> None:
    with pytest.raises(DeliveryError) as info:
        await SmtpTransport("127.0.0.1", closed_port, timeout=2).check()
    assert info.value.transient is True


async def test_smtp_check_fails_on_bad_login() -> None:
    async with RecordingSMTP(auth=("u", "p")) as smtp:
        with pytest.raises(DeliveryError) as info:
            await SmtpTransport(smtp.host, smtp.port, "u", "nope").check()
    assert info.value.transient is False


@pytest.mark.parametrize(("port", "security"),
                         [(587, "starttls"), (465, "tls"), (25, "plain"), (2525, "plain")])
def test_security_follows_the_port(port: int, security: str) -> None:
    assert security_for_port(port) == security
    assert SmtpTransport("mail.test", port).security == security


async def test_smtp_starttls_over_the_wire(tls: tuple[ssl.SSLContext, ssl.SSLContext]) -> None:
    server_ctx, client_ctx = tls
    async with RecordingSMTP(starttls_context=server_ctx, auth=("u", "p")) as smtp:
        transport = SmtpTransport(smtp.host, smtp.port, "u", "p", security="starttls", tls_context=client_ctx)
        await transport.send(_message())
        [received] = await smtp.wait_for(1)
    assert received.tls is True and received.login == "u"


async def test_smtp_implicit_tls_over_the_wire(tls: tuple[ssl.SSLContext, ssl.SSLContext]) -> None:
    server_ctx, client_ctx = tls
    async with RecordingSMTP(implicit_tls_context=server_ctx) as smtp:
        await SmtpTransport(smtp.host, smtp.port, security="tls", tls_context=client_ctx).send(_message())
        [received] = await smtp.wait_for(1)
    assert received.tls is True


async def test_smtp_untrusted_certificate_is_a_permanent_failure(
        tls: tuple[ssl.SSLContext, ssl.SSLContext]) -> None:
    server_ctx, _ = tls
    _, other_client_ctx = make_tls_contexts()  # trusts a different certificate
    async with RecordingSMTP(starttls_context=server_ctx) as smtp:
        with pytest.raises(DeliveryError, match="TLS") as info:
            await SmtpTransport(smtp.host, smtp.port, security="starttls", tls_context=other_client_ctx).send(
                _message())
    assert info.value.transient is False


async def test_smtp_starttls_required_but_not_offered_is_permanent() -> None:
    async with RecordingSMTP() as smtp:
        with pytest.raises(DeliveryError, match="STARTTLS") as info:
            await SmtpTransport(smtp.host, smtp.port, security="starttls").send(_message())
    assert info.value.transient is False
    assert smtp.messages == []


# --- outbox ---------------------------------------------------------------------------------


async def test_outbox_writes_a_parseable_eml_and_creates_the_folder(tmp_path: Path) -> None:
    outbox = tmp_path / "data" / "outbox"
    transport = OutboxTransport(outbox)
    message_id = await transport.send(_message(Bcc="carol@example.com"))
    [path] = list(outbox.iterdir())
    assert transport.name == "outbox"
    assert path.suffix == ".eml" and path.name[:8].isdigit()
    parsed = email.message_from_bytes(path.read_bytes(), policy=policy.default)
    assert parsed["Message-ID"] == message_id
    assert parsed["To"] == "alice@example.com"
    assert parsed["Bcc"] == "carol@example.com"  # the file is the only record of the bcc
    assert parsed.get_content().strip() == "Hello Alice"


async def test_outbox_file_names_are_unique(tmp_path: Path) -> None:
    transport = OutboxTransport(tmp_path)
    ids = {await transport.send(_message()) for _ in range(5)}
    assert len(ids) == 5
    assert len(list(tmp_path.glob("*.eml"))) == 5
    assert not list(tmp_path.glob(".*"))  # no temp files left behind


async def test_outbox_unwritable_folder_is_a_permanent_failure(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    with pytest.raises(DeliveryError, match="cannot write to the outbox folder") as info:
        await OutboxTransport(blocker / "outbox").send(_message())
    assert info.value.transient is False


async def test_outbox_check_creates_the_folder(tmp_path: Path) -> None:
    await OutboxTransport(tmp_path / "new").check()
    assert (tmp_path / "new").is_dir()


async def test_outbox_check_fails_when_the_folder_cannot_exist(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(DeliveryError, match="not writable"):
        await OutboxTransport(tmp_path / "file").check()


# --- retries --------------------------------------------------------------------------------


async def test_retries_transient_failures_until_accepted() -> None:
    async with RecordingSMTP(fail_first=2, fail_code=421) as smtp:
        message_id = await send_with_retries(SmtpTransport(smtp.host, smtp.port), _message(), base_delay=0)
        [received] = await smtp.wait_for(1)
    assert smtp.attempts == 3
    assert received.message["Message-ID"] == message_id  # the same ID on every attempt


async def test_retries_give_up_after_the_last_attempt() -> None:
    async with RecordingSMTP(fail_first=10, fail_code=451) as smtp:
        with pytest.raises(DeliveryError) as info:
            await send_with_retries(SmtpTransport(smtp.host, smtp.port), _message(), attempts=3, base_delay=0)
    assert smtp.attempts == 3
    assert info.value.transient is True and info.value.attempts == 3


async def test_permanent_failures_are_not_retried() -> None:
    async with RecordingSMTP(fail_first=10, fail_code=550) as smtp:
        with pytest.raises(DeliveryError) as info:
            await send_with_retries(SmtpTransport(smtp.host, smtp.port), _message(), base_delay=0)
    assert smtp.attempts == 1
    assert info.value.attempts == 1


async def test_retries_on_refused_port(closed_port: int) -> None:
    with pytest.raises(DeliveryError) as info:
        await send_with_retries(SmtpTransport("127.0.0.1", closed_port, timeout=2), _message(), base_delay=0)
    assert info.value.attempts == 3


async def test_retries_need_at_least_one_attempt(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="attempts must be at least 1"):
        await send_with_retries(OutboxTransport(tmp_path), _message(), attempts=0)
