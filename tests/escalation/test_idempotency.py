"""sendemail with an idempotency key in ``_meta``: a repeated key sends nothing and gets the first
call's answer. Over real Streamable HTTP with the real MCP client, mail going to a real aiosmtpd.

Restarts, the schema upgrade and key expiry are in ``test_idempotency_store.py``.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session
from mcp import Client
from mcp_types import CallToolResult, TextContent

from msev15.escalation.server import EscalationServer
from msev15.mcpkit.meta import IDEMPOTENCY_META_KEY, TENANT_META_KEY, idempotency_key_from_meta
from tests.mcp_calls import as_meta
from tests.smtp_server import RecordingSMTP

from .conftest import connect, http_get, metric, running, uc2_args

KEY = "call-0001"
A, B = "acme", "globex"


def conflict_message(key: str) -> str:
    return f"idempotency key {key!r} was already used for another sendemail request; a new request needs a new key"


async def send(client: Client, key: object | None = KEY, tenant: str | None = None, **args: Any) -> CallToolResult:
    """sendemail with ``key`` (None: no key at all) and ``tenant`` in ``_meta``; uc2_args() by default."""
    meta: dict[str, Any] = {}
    if key is not None:
        meta[IDEMPOTENCY_META_KEY] = key
    if tenant is not None:
        meta[TENANT_META_KEY] = tenant
    return await client.call_tool("sendemail", args or uc2_args(), meta=as_meta(meta) if meta else None)


def text_of(result: CallToolResult) -> str:
    return "\n".join(block.text for block in result.content if isinstance(block, TextContent))


async def metrics_of(server: EscalationServer) -> str:
    return (await http_get(server, "/metrics"))[2]


async def wait_for_metric(server: EscalationServer, name: str, value: float, timeout: float = 5.0) -> None:
    """Poll /metrics until ``name`` reaches ``value`` (bounded)."""
    async with asyncio.timeout(timeout):
        while metric(await metrics_of(server), name) < value:
            await asyncio.sleep(0.01)


class GatedSMTP(RecordingSMTP):
    """Holds every DATA until the test opens ``gate``; ``arrived`` is set by the first one."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.arrived = asyncio.Event()

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.arrived.set()
        await self.gate.wait()
        status = self._deliver(session, envelope)
        async with self._changed:
            self._changed.notify_all()
        return status

    def _factory(self) -> SMTP:
        protocol = SMTP(self, loop=asyncio.get_running_loop(), enable_SMTPUTF8=True, hostname="smtp.test")
        self._protocols.append(protocol)
        return protocol


def smtp_settings(settings_for: Any, smtp: RecordingSMTP, **overrides: Any) -> Any:
    return settings_for(smtp_server="127.0.0.1", smtp_port=smtp.port, **overrides)


async def test_the_same_key_twice_sends_once_and_answers_the_same(settings_for, smtp, caplog):
    caplog.set_level("INFO")
    async with running(smtp_settings(settings_for, smtp)) as server, connect(server) as client:
        first = await send(client, tenant=A)
        second = await send(client, tenant=A)
        status = await client.call_tool("get_email_status", {"email_id": first.structured_content["email_id"]},
                                        meta=as_meta({TENANT_META_KEY: A}))
        metrics = await metrics_of(server)

    assert not first.is_error and not second.is_error
    assert first.structured_content["status"] == "sent"
    assert second.structured_content == first.structured_content
    assert json.loads(text_of(second)) == first.structured_content
    assert sorted(m.rcpt_tos for m in smtp.messages) == [("jane.doe@example.com",), ("support@example.com",)]
    assert smtp.attempts == 2
    assert status.structured_content["status"] == "sent"
    assert metric(metrics, "escalation_emails_total", use_case="UC2", status="sent") == 1
    assert metric(metrics, "escalation_emails_replayed_total") == 1
    assert metric(metrics, "escalation_requests_rejected_total") == 0

    replays = [r for r in caplog.records if r.name == "escalation.service" and "nothing sent again" in r.getMessage()]
    assert len(replays) == 1 and replays[0].levelname == "INFO"
    line = replays[0].getMessage()
    assert "TKT-2025-001234" in line and first.structured_content["email_id"] in line and f"tenant {A}" in line
    assert all(KEY not in r.getMessage() for r in caplog.records)


async def test_calls_without_a_key_send_every_time(settings_for, smtp):
    async with running(smtp_settings(settings_for, smtp)) as server, connect(server) as client:
        first = await send(client, key=None)
        second = await send(client, key=None)
        metrics = await metrics_of(server)
    assert first.structured_content["email_id"] != second.structured_content["email_id"]
    assert len(smtp.messages) == 4
    assert metric(metrics, "escalation_emails_replayed_total") == 0


@pytest.mark.parametrize("drop_first", [True, False], ids=["first-connection-dropped", "both-connected"])
async def test_a_retry_while_the_first_call_is_sending_waits_for_it(settings_for, drop_first: bool):
    async with GatedSMTP() as smtp, running(smtp_settings(settings_for, smtp)) as server:

        async def call() -> CallToolResult:
            async with connect(server) as client:
                return await send(client)

        first = asyncio.create_task(call())
        await asyncio.wait_for(smtp.arrived.wait(), 5)
        if drop_first:  # the client gives up on its first attempt and goes away
            first.cancel()
            await asyncio.gather(first, return_exceptions=True)
        retry = asyncio.create_task(call())
        await wait_for_metric(server, "escalation_emails_replayed_total", 1)
        assert not retry.done() and smtp.messages == []
        smtp.gate.set()
        answer = await asyncio.wait_for(retry, 5)
        async with connect(server) as client:
            status = await client.call_tool("get_email_status", {"email_id": answer.structured_content["email_id"]})
        if not drop_first:
            assert (await first).structured_content == answer.structured_content

    assert not answer.is_error and answer.structured_content["status"] == "sent"
    assert smtp.attempts == 2 and len(smtp.messages) == 2
    assert status.structured_content["status"] == "sent"


async def test_a_failed_first_call_is_replayed_without_new_attempts(settings_for):
    async with RecordingSMTP(fail_first=100, fail_code=554) as smtp, \
            running(smtp_settings(settings_for, smtp)) as server, connect(server) as client:
        first = await send(client)
        second = await send(client)
        metrics = await metrics_of(server)

    assert first.is_error and second.is_error
    assert first.structured_content["status"] == "failed"
    assert set(first.structured_content["errors"]) == {"customer", "support_team"}
    assert "554" in first.structured_content["errors"]["customer"]
    assert second.structured_content == first.structured_content
    assert smtp.attempts == 2 and smtp.messages == []  # one permanent refusal each, none after
    assert metric(metrics, "escalation_emails_total", use_case="UC2", status="failed") == 1


async def test_a_partial_first_call_is_replayed_with_its_error_flag(settings_for):
    async with RecordingSMTP(refuse_recipients={"jane.doe@example.com": 550}) as smtp, \
            running(smtp_settings(settings_for, smtp)) as server, connect(server) as client:
        first = await send(client)
        second = await send(client)
    assert first.is_error and second.is_error
    assert first.structured_content["status"] == "partial" and list(first.structured_content["errors"]) == ["customer"]
    assert second.structured_content == first.structured_content
    assert [m.rcpt_tos for m in smtp.messages] == [("support@example.com",)]


@pytest.mark.parametrize("change", [
    {"ticket_id": "TKT-2025-009999"}, {"customer_id": "CUST-002"}, {"customer_email": "john@example.com"},
    {"query": "Another question"}, {"use_case": "UC3"}, {"reason": "Another reason"},
], ids=lambda change: next(iter(change)))
async def test_the_same_key_with_other_arguments_is_refused(settings_for, smtp, change: dict[str, str]):
    async with running(smtp_settings(settings_for, smtp)) as server, connect(server) as client:
        first = await send(client)
        other = await send(client, **uc2_args(**change))
        again = await send(client)
        metrics = await metrics_of(server)

    assert not first.is_error
    assert other.is_error and text_of(other).endswith(conflict_message(KEY))
    assert "TKT-2025-001234" not in text_of(other)  # the first request is not shown
    assert again.structured_content == first.structured_content
    assert len(smtp.messages) == 2
    assert metric(metrics, "escalation_requests_rejected_total") == 1


async def test_a_conflicting_call_is_refused_while_the_first_is_still_sending(settings_for):
    async with GatedSMTP() as smtp, running(smtp_settings(settings_for, smtp)) as server, \
            connect(server) as client:
        first = asyncio.create_task(send(client))
        await asyncio.wait_for(smtp.arrived.wait(), 5)
        other = await send(client, **uc2_args(ticket_id="TKT-2025-009999"))
        smtp.gate.set()
        answer = await first
    assert other.is_error and text_of(other).endswith(conflict_message(KEY))
    assert answer.structured_content["status"] == "sent" and len(smtp.messages) == 2


async def test_the_same_request_written_differently_is_a_repeat(settings_for, smtp):
    async with running(smtp_settings(settings_for, smtp)) as server, connect(server) as client:
        first = await send(client)
        second = await send(client, **uc2_args(use_case="uc2", ticket_id=" TKT-2025-001234 "))
    assert second.structured_content == first.structured_content
    assert len(smtp.messages) == 2


async def test_keys_are_per_tenant(settings_for, smtp):
    async with running(smtp_settings(settings_for, smtp)) as server, connect(server) as client:
        acme = await send(client, tenant=A)
        globex = await send(client, tenant=B, **uc2_args(ticket_id="TKT-2025-009999"))
        default = await send(client)
        acme_again = await send(client, tenant=A)
        globex_status = await client.call_tool("get_email_status", {"email_id": globex.structured_content["email_id"]},
                                               meta=as_meta({TENANT_META_KEY: B}))

    ids = {r.structured_content["email_id"] for r in (acme, globex, default)}
    assert len(ids) == 3 and len(smtp.messages) == 6
    assert acme_again.structured_content == acme.structured_content
    assert globex_status.structured_content["ticket_id"] == "TKT-2025-009999"


@pytest.mark.parametrize("bad_key", ["", "-starts-with-a-dash", "has space", "x" * 129, "line\n", 42, ["k"]],
                         ids=["empty", "dash", "space", "too-long", "newline", "int", "list"])
async def test_a_malformed_key_is_refused(settings_for, smtp, bad_key: object):
    with pytest.raises(ValueError) as expected:
        idempotency_key_from_meta({IDEMPOTENCY_META_KEY: bad_key})
    async with running(smtp_settings(settings_for, smtp)) as server, connect(server) as client:
        result = await send(client, key=bad_key)
        metrics = await metrics_of(server)
    assert result.is_error and text_of(result).endswith(str(expected.value))
    assert smtp.attempts == 0
    assert metric(metrics, "escalation_requests_rejected_total") == 1


async def test_a_malformed_key_message_names_the_meta_key(settings_for, smtp):
    async with running(smtp_settings(settings_for, smtp)) as server, connect(server) as client:
        result = await send(client, key="has space")
    assert text_of(result).endswith(
        f"_meta['{IDEMPOTENCY_META_KEY}'] must be 1-128 characters: letters, digits and . _ : - (starting with a "
        "letter or digit), got 'has space'")


async def test_a_longest_valid_key_is_accepted(settings_for, smtp):
    key = "k" + "x._:-" * 25 + "zz"
    assert len(key) == 128
    async with running(smtp_settings(settings_for, smtp)) as server, connect(server) as client:
        first = await send(client, key=key)
        second = await send(client, key=key)
    assert not first.is_error and second.structured_content == first.structured_content
    assert len(smtp.messages) == 2


async def test_get_email_status_ignores_the_key(settings_for, smtp):
    async with running(smtp_settings(settings_for, smtp)) as server, connect(server) as client:
        sent = await send(client)
        status = await client.call_tool("get_email_status", {"email_id": sent.structured_content["email_id"]},
                                        meta=as_meta({IDEMPOTENCY_META_KEY: "has space"}))
    assert not status.is_error and status.structured_content["status"] == "sent"


async def test_no_tool_schema_offers_the_key(settings_for):
    async with running(settings_for()) as server, connect(server) as client:
        tools = (await client.list_tools()).tools
    for tool in tools:
        assert "idempotency" not in json.dumps(tool.input_schema).lower(), tool.name
