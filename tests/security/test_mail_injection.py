"""Header injection through the agent's email tools (CVE-2024-6923 and friends), over SMTP and the
outbox: a payload is refused with a clear tool error, nothing is sent and nothing is written.

Python 3.11 before 3.11.10 decodes an RFC 2047 encoded word in a header value into raw CR/LF
when the message is serialized, so an input check for CR/LF alone lets
``=?utf-8?q?Invoice=0D=0AReply-To:_attacker@evil.test?=`` through as a real Reply-To header.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from msev15.agent.tools.email import email_tools
from msev15.agent.tools.mailer import Mailer
from msev15.agent.tools.registry import ToolContext, ToolError
from msev15.config import Settings
from tests.smtp_server import RecordingSMTP

CTX = ToolContext(tenant_id="acme", session_id="s-1", request_id="r-1")

# The issue's payloads first, then variants: Q and B encodings, lower/upper case, line separators
# of Unicode, folding, a header-ending double CRLF, several words.
REPLY_TO = "=?utf-8?q?Invoice=0D=0AReply-To:_attacker@evil.test?="
PAYLOADS = [
    REPLY_TO,
    "=?UTF-8?Q?Invoice=0AReply-To:_attacker@evil.test?=",
    "=?utf-8?b?SW52b2ljZQ0KUmVwbHktVG86IGF0dGFja2VyQGV2aWwudGVzdA==?=",  # base64 of the same
    "=?iso-8859-1?q?x=0D=0A=0D=0AReplaced_body?=",
    "Hello =?utf-8?q?a?= =?utf-8?q?=0D=0ABcc:_victim@evil.test?=",
    "=?utf-8?q?Invoice=E2=80=A8Reply-To:_attacker@evil.test?=",  # U+2028 LINE SEPARATOR
    "=?utf-8?q?Invoice=C2=85Reply-To:_attacker@evil.test?=",  # U+0085 NEL
    "=?utf-8?q?Invoice=00?=",
    "=?utf-8?q?Invoice=0D?=",
]
ADDRESS_PAYLOADS = [
    f"{REPLY_TO} <alice@example.com>",
    "=?utf-8?q?x=0D=0A=0D=0Aevil_body?= <alice@example.com>",
    '"=?utf-8?q?x=0D=0ABcc:_victim@evil.test?=" <alice@example.com>',
    "=?utf-8?b?eA0KDQpldmlsIGJvZHk=?= <alice@example.com>",
]


@pytest.fixture
async def smtp() -> AsyncIterator[RecordingSMTP]:
    async with RecordingSMTP() as server:
        yield server


def _mailer(tmp_path: Path, smtp: RecordingSMTP | None) -> Mailer:
    values: dict[str, Any] = {"sender_email": "support@shop.test", "email_outbox_dir": str(tmp_path / "outbox"),
                              "email_attachments_dir": str(tmp_path / "attachments")}
    if smtp is not None:
        values.update(smtp_server=smtp.host, smtp_port=smtp.port)
    return Mailer.from_settings(Settings.defaults(**values), base_delay=0)


async def _send(mailer: Mailer, tool: str = "send_email", **args: Any) -> Any:
    tools = {t.name: t for t in email_tools(mailer)}
    base = {"to": "alice@example.com", "subject": "Hello", "body": "Hello"}
    if tool == "send_html_email":
        base["html_body"] = base.pop("body")
    return await tools[tool].func(CTX, {**base, **args})


def _outbox(tmp_path: Path) -> list[Path]:
    folder = tmp_path / "outbox"
    return sorted(folder.iterdir()) if folder.exists() else []


@pytest.mark.parametrize("transport", ["smtp", "outbox"])
async def test_the_issue_payload_in_the_subject_is_refused(tmp_path: Path, smtp: RecordingSMTP,
                                                            transport: str) -> None:
    mailer = _mailer(tmp_path, smtp if transport == "smtp" else None)
    with pytest.raises(ToolError, match=r"'subject'.*encoded word"):
        await _send(mailer, subject=REPLY_TO)
    assert smtp.attempts == 0
    assert _outbox(tmp_path) == []


@pytest.mark.parametrize("transport", ["smtp", "outbox"])
@pytest.mark.parametrize("payload", PAYLOADS)
async def test_encoded_words_with_control_characters_in_the_subject_are_refused(
        tmp_path: Path, smtp: RecordingSMTP, transport: str, payload: str) -> None:
    mailer = _mailer(tmp_path, smtp if transport == "smtp" else None)
    with pytest.raises(ToolError, match="'subject'"):
        await _send(mailer, subject=payload)
    assert smtp.attempts == 0
    assert _outbox(tmp_path) == []


@pytest.mark.parametrize("transport", ["smtp", "outbox"])
@pytest.mark.parametrize("field", ["to", "cc", "bcc"])
@pytest.mark.parametrize("payload", ADDRESS_PAYLOADS)
async def test_encoded_words_in_display_names_are_refused(tmp_path: Path, smtp: RecordingSMTP, transport: str,
                                                          field: str, payload: str) -> None:
    mailer = _mailer(tmp_path, smtp if transport == "smtp" else None)
    with pytest.raises(ToolError, match=f"'{field}'"):
        await _send(mailer, "send_html_email", **{field: payload})
    assert smtp.attempts == 0
    assert _outbox(tmp_path) == []


@pytest.mark.parametrize("filename", ["=?utf-8?q?a=0D=0AX-Evil:_1?=.txt", "=?utf-8?b?YQ0KDQpib2R5?=.txt"])
async def test_encoded_words_in_attachment_file_names_are_refused(tmp_path: Path, smtp: RecordingSMTP,
                                                                  filename: str) -> None:
    folder = tmp_path / "attachments" / "acme"
    folder.mkdir(parents=True)
    (folder / filename).write_bytes(b"data")
    with pytest.raises(ToolError, match="attachment"):
        await _send(_mailer(tmp_path, smtp), "send_email_with_attachments", attachments=[filename])
    assert smtp.attempts == 0


@pytest.mark.parametrize("subject", ["=?utf-8?q?Caf=C3=A9_au_lait?=", "Order ORD-1 =?bad", "Price =?= 3"])
async def test_harmless_encoded_words_and_lookalikes_still_send(tmp_path: Path, smtp: RecordingSMTP,
                                                                 subject: str) -> None:
    result = await _send(_mailer(tmp_path, smtp), subject=subject)
    assert result["sent"] is True
    [received] = await smtp.wait_for(1)
    message = received.message
    assert "Reply-To" not in message
    assert [k for k in message if k.lower() == "subject"] == ["Subject"]


async def test_a_long_non_ascii_subject_and_name_still_send(tmp_path: Path, smtp: RecordingSMTP) -> None:
    subject = "Ihre Bestellung – Rückerstattung " * 12
    result = await _send(_mailer(tmp_path, smtp), subject=subject, to="Jürgen Müller-Lüdenscheidt <j@example.com>")
    assert result["sent"] is True
    [received] = await smtp.wait_for(1)
    assert received.message["Subject"] == subject.strip()
    assert received.message["To"].addresses[0].display_name == "Jürgen Müller-Lüdenscheidt"
