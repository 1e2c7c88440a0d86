"""EMAIL_MAX_PER_TENANT_PER_HOUR: one tenant's chats cannot turn the email tools into a bulk mailer,
and the message verification that backs the input checks."""

from __future__ import annotations

from email.headerregistry import Address
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from msev15.agent.tools.email import email_tools
from msev15.agent.tools.mailer import Mailer
from msev15.agent.tools.registry import ToolContext, ToolError
from msev15.agent.tools.send_limits import SendLimiter
from msev15.common.mail import DeliveryError, OutboxTransport
from msev15.common.mailguard import HeaderInjection, verify_message
from msev15.config import Settings


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _mailer(tmp_path: Path, clock: Clock, per_hour: int) -> Mailer:
    settings = Settings.defaults(sender_email="support@shop.test", email_outbox_dir=str(tmp_path / "outbox"))
    return Mailer(OutboxTransport(settings.email_outbox_dir), sender_email=settings.sender_email,
                  limiter=SendLimiter(per_hour, clock=clock), base_delay=0)


async def _send(mailer: Mailer, tenant: str) -> Any:
    tool = {t.name: t for t in email_tools(mailer)}["send_text_email"]
    ctx = ToolContext(tenant_id=tenant, session_id="s", request_id="r")
    return await tool.func(ctx, {"to": "a@example.com", "subject": "Hi", "body": "Hello"})


async def test_a_tenant_over_its_hourly_limit_is_refused_and_others_are_not(tmp_path: Path) -> None:
    clock = Clock()
    mailer = _mailer(tmp_path, clock, per_hour=3)
    for _ in range(3):
        assert (await _send(mailer, "acme"))["sent"] is True
    with pytest.raises(ToolError, match="at most 3 emails per hour"):
        await _send(mailer, "acme")
    assert len(list((tmp_path / "outbox").iterdir())) == 3
    assert (await _send(mailer, "globex"))["sent"] is True  # another tenant has its own budget
    clock.now += 3600.5
    assert (await _send(mailer, "acme"))["sent"] is True  # the window slid


async def test_refused_messages_do_not_use_the_budget(tmp_path: Path) -> None:
    mailer = _mailer(tmp_path, Clock(), per_hour=1)
    tool = {t.name: t for t in email_tools(mailer)}["send_text_email"]
    ctx = ToolContext(tenant_id="acme", session_id="s", request_id="r")
    with pytest.raises(ToolError):
        await tool.func(ctx, {"to": "a@example.com", "subject": "=?utf-8?q?a=0D=0AX:_1?=", "body": "x"})
    assert (await _send(mailer, "acme"))["sent"] is True


async def test_zero_means_no_limit() -> None:
    limiter = SendLimiter(0)
    assert all([await limiter.take("acme") is None for _ in range(1000)])


def test_the_default_limit_is_100_per_hour() -> None:
    assert Settings.defaults().email_max_per_tenant_per_hour == 100
    assert Mailer.from_settings(Settings.defaults()).limiter.per_hour == 100


def _message(**headers: Any) -> EmailMessage:
    message = EmailMessage()
    message["From"] = Address("Shop", addr_spec="shop@example.com")
    message["To"] = "a@example.com"
    for name, value in headers.items():
        message[name] = value
    message.set_content("body")
    return message


def test_a_built_message_that_reads_back_as_set_passes() -> None:
    verify_message(_message(Subject="Café – order ORD-1 " * 10))


@pytest.mark.parametrize("value", ["=?utf-8?q?a=0D=0AReply-To:_x@evil.test?=", "=?utf-8?q?a=0A=0Abody?="])
def test_a_built_message_with_an_injected_header_is_refused(value: str) -> None:
    with pytest.raises(HeaderInjection):
        verify_message(_message(Subject=value))


async def test_the_transports_refuse_such_a_message_too(tmp_path: Path) -> None:
    """The last line of defence, for every sender of the project (escalation included)."""
    outbox = OutboxTransport(tmp_path / "outbox")
    with pytest.raises(DeliveryError, match="header injection") as info:
        await outbox.send(_message(Subject="=?utf-8?q?a=0D=0AReply-To:_x@evil.test?="))
    assert info.value.transient is False
    assert not (tmp_path / "outbox").exists() or not list((tmp_path / "outbox").iterdir())
