"""The file outbox backend, and the Azure Communication Services backend: the real SDK talking
to a scripted ACS endpoint on loopback that checks its HMAC signatures."""

from __future__ import annotations

import email
import json
from email import policy
from pathlib import Path

import pytest

from msev15.common.env import SettingsError
from msev15.escalation.config import EscalationSettings

from .conftest import connect, http_get, metric, running, uc2_args, uc3_args


async def test_outbox_backend_writes_both_messages(settings_for, tmp_path: Path):
    settings = settings_for()
    assert settings.backend == "outbox"
    async with running(settings) as server, connect(server) as client:
        result = await client.call_tool("sendemail", uc3_args())
        status = await client.call_tool("get_email_status", {"email_id": result.structured_content["email_id"]})
        _, _, health = await http_get(server, "/health")

    assert not result.is_error and result.structured_content["status"] == "sent"
    assert json.loads(health)["backend"] == "outbox"
    files = sorted((tmp_path / "outbox").glob("*.eml"))
    assert len(files) == 2
    messages = {m["To"]: m for m in (email.message_from_bytes(f.read_bytes(), policy=policy.default) for f in files)}
    assert messages["jane.doe@example.com"]["Subject"] == "Financial Coaching Request: TKT-2025-001235"
    assert messages["support@example.com"]["Subject"] == "New Support Ticket: TKT-2025-001235 (UC3)"
    for message in messages.values():
        assert message.get_body(preferencelist=("plain",)) is not None
        assert message.get_body(preferencelist=("html",)) is not None
    records = status.structured_content["recipients"]
    assert {r["backend"] for r in records.values()} == {"outbox"}
    assert records["customer"]["provider_message_id"] == messages["jane.doe@example.com"]["Message-ID"]


async def test_unwritable_outbox_fails_without_retrying(settings_for, tmp_path: Path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the outbox folder should be")
    async with running(settings_for(email_outbox_dir=str(blocker))) as server, connect(server) as client:
        result = await client.call_tool("sendemail", uc2_args())
    assert result.is_error and result.structured_content["status"] == "failed"
    for error in result.structured_content["errors"].values():
        assert error.startswith("Failed to deliver email after 1 retry: cannot write to the outbox folder")


async def test_acs_sends_both_messages_through_the_sdk(settings_for, acs):
    scripted, connection_string = acs
    settings = settings_for(azure_communication_connection_string=connection_string, smtp_server="ignored.example")
    assert settings.backend == "acs"  # ACS wins over SMTP
    async with running(settings) as server, connect(server) as client:
        result = await client.call_tool("sendemail", uc2_args(query="Rate for <b>mortgages</b>?"))
        _, _, health = await http_get(server, "/health")

    assert not result.is_error, result.content
    data = result.structured_content
    assert data["status"] == "sent" and data["backend"] == "acs"
    assert json.loads(health)["backend"] == "acs"
    assert scripted.bad_signatures == 0
    assert len(scripted.requests) == 2
    bodies = {r["json"]["recipients"]["to"][0]["address"]: r for r in scripted.requests}
    customer = bodies["jane.doe@example.com"]
    assert customer["query"]["api-version"] == "2025-09-01"
    assert customer["json"]["senderAddress"] == "noreply@example.com"
    content = customer["json"]["content"]
    assert content["subject"] == "Support Ticket Created: TKT-2025-001234"
    assert "Your Question:\nRate for <b>mortgages</b>?" in content["plainText"]
    assert "Rate for &lt;b&gt;mortgages&lt;/b&gt;?" in content["html"]
    assert customer["json"]["headers"]["X-Ticket-ID"] == "TKT-2025-001234"
    team = bodies["support@example.com"]["json"]["content"]
    assert team["subject"] == "New Support Ticket: TKT-2025-001234 (UC2)"
    assert {r["headers"]["Operation-Id"] for r in scripted.requests} == set(scripted.operations)


async def test_acs_delivery_is_confirmed_by_polling_the_operation(settings_for, acs):
    scripted, connection_string = acs
    async with running(settings_for(azure_communication_connection_string=connection_string)) as server, \
            connect(server) as client:
        sent = await client.call_tool("sendemail", uc2_args())
        email_id = sent.structured_content["email_id"]
        customer_op = next(op for op, r in scripted.operations.items()
                           if r["json"]["recipients"]["to"][0]["address"] == "jane.doe@example.com")
        scripted.final_status[customer_op] = "Running"
        first = await client.call_tool("get_email_status", {"email_id": email_id})
        scripted.final_status[customer_op] = "Succeeded"
        second = await client.call_tool("get_email_status", {"email_id": email_id})

    assert first.structured_content["status"] == "sent"
    records = first.structured_content["recipients"]
    assert records["customer"]["provider_status"] == "Running" and records["customer"]["status"] == "sent"
    assert records["support_team"]["status"] == "delivered"
    assert records["customer"]["provider_message_id"] == customer_op
    assert second.structured_content["status"] == "delivered"
    assert second.structured_content["recipients"]["customer"]["delivered_at"]


async def test_acs_failed_operation_shows_in_the_status(settings_for, acs):
    scripted, connection_string = acs
    async with running(settings_for(azure_communication_connection_string=connection_string)) as server, \
            connect(server) as client:
        sent = await client.call_tool("sendemail", uc2_args())
        for op in scripted.operations:
            scripted.final_status[op] = "Failed"
        status = await client.call_tool("get_email_status", {"email_id": sent.structured_content["email_id"]})

    assert status.structured_content["status"] == "failed"
    for record in status.structured_content["recipients"].values():
        assert record["status"] == "failed"
        assert "EmailDroppedAllRecipientsSuppressed" in record["last_error"]


async def test_acs_transient_errors_are_retried_with_the_same_operation_id(settings_for, acs):
    scripted, connection_string = acs
    scripted.send_script = [503, 429]
    async with running(settings_for(azure_communication_connection_string=connection_string)) as server, \
            connect(server) as client:
        result = await client.call_tool("sendemail", uc2_args())
        _, _, metrics = await http_get(server, "/metrics")

    assert result.structured_content["status"] == "sent"
    assert len(scripted.requests) == 4
    by_recipient: dict[str, set[str]] = {}
    for request in scripted.requests:
        address = request["json"]["recipients"]["to"][0]["address"]
        by_recipient.setdefault(address, set()).add(request["headers"]["Operation-Id"])
    assert all(len(ids) == 1 for ids in by_recipient.values())  # a retry is the same operation
    assert metric(metrics, "escalation_email_retries_total", backend="acs") == 2


async def test_acs_rejected_request_fails_without_retrying(settings_for, acs):
    scripted, connection_string = acs
    scripted.send_script = [400, 400]
    async with running(settings_for(azure_communication_connection_string=connection_string)) as server, \
            connect(server) as client:
        result = await client.call_tool("sendemail", uc2_args())

    assert result.is_error and result.structured_content["status"] == "failed"
    assert len(scripted.requests) == 2
    for error in result.structured_content["errors"].values():
        assert error.startswith("Failed to deliver email after 1 retry: Azure Communication Services answered 400")
        assert "Scripted" in error


async def test_acs_wrong_key_fails_as_an_authentication_error(settings_for, acs):
    scripted, connection_string = acs
    wrong = connection_string.rsplit("accesskey=", 1)[0] + "accesskey=d3Jvbmcta2V5"
    async with running(settings_for(azure_communication_connection_string=wrong)) as server, \
            connect(server) as client:
        result = await client.call_tool("sendemail", uc2_args())

    assert scripted.bad_signatures == 2
    for error in result.structured_content["errors"].values():
        assert "answered 401" in error and "check the access key" in error


async def test_acs_unreachable_retries_then_fails(settings_for, dead_port):
    connection_string = f"endpoint=http://127.0.0.1:{dead_port}/;accesskey=a2V5"
    async with running(settings_for(azure_communication_connection_string=connection_string,
                                    email_retry_count=2)) as server, connect(server) as client:
        result = await client.call_tool("sendemail", uc2_args())
    for error in result.structured_content["errors"].values():
        assert error.startswith("Failed to deliver email after 2 retries: cannot reach Azure Communication Services")


@pytest.mark.parametrize("raw, detail", [
    ("endpoint=https://x.communication.azure.com/", "accesskey missing"),
    ("accesskey=a2V5", "endpoint missing"),
    ("endpoint=https://x.communication.azure.com/;accesskey=not base64!", "accesskey is not base64"),
    ("endpoint=ftp://x.example/;accesskey=a2V5", "the endpoint must be a URL"),
    ("just-garbage", "expected endpoint="),
])
def test_invalid_connection_string_is_refused_at_start(raw, detail):
    with pytest.raises(SettingsError) as info:
        EscalationSettings.from_env({"AZURE_COMMUNICATION_CONNECTION_STRING": raw})
    [line] = info.value.problems
    assert line.startswith("AZURE_COMMUNICATION_CONNECTION_STRING: Invalid Azure Communication Services "
                           "connection string")
    assert detail in line
    assert "a2V5" not in line and "got '********'" in line


def test_valid_connection_string_is_accepted():
    settings = EscalationSettings.from_env(
        {"AZURE_COMMUNICATION_CONNECTION_STRING": "endpoint=https://x.communication.azure.com/;accesskey=a2V5"})
    assert settings.backend == "acs"
    assert settings.acs_connection is not None
    assert settings.acs_connection.endpoint == "https://x.communication.azure.com"
    assert settings.masked()["AZURE_COMMUNICATION_CONNECTION_STRING"] == "********"
