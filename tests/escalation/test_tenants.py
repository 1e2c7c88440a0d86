"""Delivery records belong to the tenant in the request's ``_meta``; other tenants cannot read them.

Over real Streamable HTTP with the real MCP client, mail going to the outbox folder.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from msev15.escalation.tracking import TrackingStore
from msev15.mcpkit.meta import TENANT_META_KEY
from tests.mcp_calls import as_meta, error_as, first_text, ok_as

from .conftest import connect, running, uc2_args

A, B = "acme", "globex"
UNKNOWN_ID = "EMAIL-UC2-20200101-001"
BAD_TENANT_MESSAGE = ("tenant_id must be 1-128 characters: letters, digits and . _ : @ - (starting with a letter "
                      f"or digit), got 'acme/../globex' (from _meta['{TENANT_META_KEY}'])")

# The first release's tables, before delivery records had tenants.
_OLD_SCHEMA = """
CREATE TABLE email_sequence (
    day TEXT NOT NULL, use_case TEXT NOT NULL, last INTEGER NOT NULL, PRIMARY KEY (day, use_case)
);
CREATE TABLE email_deliveries (
    email_id TEXT NOT NULL, role TEXT NOT NULL, ticket_id TEXT NOT NULL, use_case TEXT NOT NULL,
    recipient TEXT NOT NULL, backend TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, status TEXT NOT NULL,
    provider_message_id TEXT NOT NULL DEFAULT '', provider_status TEXT NOT NULL DEFAULT '',
    created_at TEXT NOT NULL, updated_at TEXT NOT NULL, sent_at TEXT NOT NULL DEFAULT '',
    delivered_at TEXT NOT NULL DEFAULT '', last_error TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (email_id, role)
);
CREATE INDEX email_deliveries_ticket ON email_deliveries (ticket_id);
INSERT INTO email_sequence VALUES ('20251107', 'UC2', 1);
INSERT INTO email_deliveries (email_id, role, ticket_id, use_case, recipient, backend, attempts, status,
                              created_at, updated_at, sent_at)
VALUES ('EMAIL-UC2-20251107-001', 'customer', 'TKT-2025-000001', 'UC2', 'old@example.com', 'outbox', 1, 'sent',
        '2025-11-07T10:00:00+00:00', '2025-11-07T10:00:00+00:00', '2025-11-07T10:00:00+00:00'),
       ('EMAIL-UC2-20251107-001', 'bank_team', 'TKT-2025-000001', 'UC2', 'support@example.com', 'outbox', 1, 'sent',
        '2025-11-07T10:00:00+00:00', '2025-11-07T10:00:00+00:00', '2025-11-07T10:00:00+00:00');
"""


def _outbox(settings: Any) -> list[Path]:
    folder = Path(settings.email_outbox_dir)
    return sorted(folder.glob("*.eml")) if folder.exists() else []


def _rows(db_path: str) -> list[tuple[str, str, str]]:
    conn = sqlite3.connect(db_path)
    try:
        return conn.execute("SELECT email_id, role, tenant_id FROM email_deliveries ORDER BY email_id, role").fetchall()
    finally:
        conn.close()


async def test_no_tool_schema_offers_a_tenant_or_context_argument(settings_for):
    async with running(settings_for()) as server, connect(server) as client:
        tools = (await client.list_tools()).tools
    assert {tool.name for tool in tools} == {"sendemail", "get_email_status"}
    for tool in tools:
        assert not {"ctx", "tenant_id"} & set(tool.input_schema["properties"]), tool.name
        assert "tenant" not in json.dumps(tool.input_schema).lower(), tool.name


async def test_the_sending_tenant_reads_its_status(settings_for):
    settings = settings_for()
    async with running(settings) as server, connect(server) as client:
        sent = await ok_as(client, "sendemail", A, **uc2_args())
        status = await ok_as(client, "get_email_status", A, email_id=sent["email_id"])
    assert sent["status"] == "sent"
    assert status["email_id"] == sent["email_id"] and status["ticket_id"] == "TKT-2025-001234"
    assert status["recipients"]["customer"]["recipient"] == "jane.doe@example.com"
    assert "tenant_id" not in status  # the caller's own tenant is never echoed back
    assert _rows(settings.escalation_db_path) == [(sent["email_id"], "customer", A),
                                                  (sent["email_id"], "support_team", A)]


async def test_another_tenant_gets_not_found_exactly_like_an_unknown_id(settings_for):
    async with running(settings_for()) as server, connect(server) as client:
        sent = await ok_as(client, "sendemail", A, **uc2_args())
        email_id = sent["email_id"]
        foreign = await error_as(client, "get_email_status", B, email_id=email_id)
        unknown = await error_as(client, "get_email_status", B, email_id=UNKNOWN_ID)
        still_there = await ok_as(client, "get_email_status", A, email_id=email_id)
    assert foreign.endswith(f"No email with id {email_id!r}")
    assert foreign.replace(email_id, "<id>") == unknown.replace(UNKNOWN_ID, "<id>")
    assert "jane.doe@example.com" not in foreign and "TKT-2025-001234" not in foreign
    assert still_there["status"] == "sent"


async def test_calls_without_the_meta_key_use_the_default_tenant(settings_for):
    settings = settings_for()
    async with running(settings) as server, connect(server) as client:
        anonymous = await ok_as(client, "sendemail", None, **uc2_args())
        acme = await ok_as(client, "sendemail", A, **uc2_args(ticket_id="TKT-2025-009999"))
        assert (await ok_as(client, "get_email_status", None, email_id=anonymous["email_id"]))["status"] == "sent"
        assert (await ok_as(client, "get_email_status", "default", email_id=anonymous["email_id"]))["status"] == "sent"
        assert (await error_as(client, "get_email_status", A, email_id=anonymous["email_id"])).endswith(
            f"No email with id {anonymous['email_id']!r}")
        assert (await error_as(client, "get_email_status", None, email_id=acme["email_id"])).endswith(
            f"No email with id {acme['email_id']!r}")
    tenants = {email_id: tenant for email_id, _, tenant in _rows(settings.escalation_db_path)}
    assert tenants == {anonymous["email_id"]: "default", acme["email_id"]: A}


async def test_other_meta_keys_do_not_select_a_tenant(settings_for):
    async with running(settings_for()) as server, connect(server) as client:
        sent = await ok_as(client, "sendemail", A, **uc2_args())
        result = await client.call_tool("get_email_status", {"email_id": sent["email_id"]},
                                        meta=as_meta({"tenant_id": A, "other.example/tenant_id": A}))
    # Only the namespaced key counts: this call ran as "default", which has no such email.
    assert result.is_error and first_text(result).endswith(f"No email with id {sent['email_id']!r}")


async def test_a_malformed_tenant_cannot_send(settings_for):
    settings = settings_for()
    async with running(settings) as server, connect(server) as client:
        message = await error_as(client, "sendemail", "acme/../globex", **uc2_args())
    assert message.endswith(BAD_TENANT_MESSAGE)
    assert _outbox(settings) == [] and _rows(settings.escalation_db_path) == []


async def test_a_malformed_tenant_cannot_read_a_status(settings_for):
    async with running(settings_for()) as server, connect(server) as client:
        sent = await ok_as(client, "sendemail", None, **uc2_args())
        message = await error_as(client, "get_email_status", "acme/../globex", email_id=sent["email_id"])
    assert message.endswith(BAD_TENANT_MESSAGE)
    assert "jane.doe@example.com" not in message


@pytest.mark.parametrize(("tenant", "problem"), [("", "must be 1-128 characters"), (42, "must be a string, got int"),
                                                 (["acme"], "must be a string, got list"),
                                                 ("acme\n", "must be 1-128 characters")])
@pytest.mark.parametrize("tool", ["sendemail", "get_email_status"])
async def test_empty_or_non_string_tenant_in_meta_is_refused(settings_for, tool: str, tenant: object,
                                                             problem: str):
    settings = settings_for()
    args = uc2_args() if tool == "sendemail" else {"email_id": UNKNOWN_ID}
    async with running(settings) as server, connect(server) as client:
        message = await error_as(client, tool, tenant, **args)
    assert f"tenant_id {problem}" in message and message.endswith(f"(from _meta['{TENANT_META_KEY}'])")
    assert _outbox(settings) == []


def _old_database(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path)
    try:
        conn.executescript(_OLD_SCHEMA)
    finally:
        conn.close()


async def test_a_database_from_before_tenants_is_migrated(settings_for):
    settings = settings_for()
    _old_database(Path(settings.escalation_db_path))

    async with running(settings) as server, connect(server) as client:
        old = await ok_as(client, "get_email_status", None, email_id="EMAIL-UC2-20251107-001")
        hidden = await error_as(client, "get_email_status", A, email_id="EMAIL-UC2-20251107-001")
        new = await ok_as(client, "sendemail", A, **uc2_args())

    assert old["ticket_id"] == "TKT-2025-000001" and old["status"] == "sent"
    assert old["recipients"]["customer"]["recipient"] == "old@example.com"
    assert hidden.endswith("No email with id 'EMAIL-UC2-20251107-001'")
    assert _rows(settings.escalation_db_path) == [
        ("EMAIL-UC2-20251107-001", "customer", "default"), ("EMAIL-UC2-20251107-001", "support_team", "default"),
        (new["email_id"], "customer", A), (new["email_id"], "support_team", A)]
    conn = sqlite3.connect(settings.escalation_db_path)
    try:
        columns = {row[1]: row for row in conn.execute("PRAGMA table_info(email_deliveries)")}
        indexes = {row[1] for row in conn.execute("PRAGMA index_list(email_deliveries)")}
        tenant_index = [row[2] for row in conn.execute("PRAGMA index_info(email_deliveries_tenant)")]
    finally:
        conn.close()
    assert columns["tenant_id"][3] == 1  # NOT NULL
    assert {"email_deliveries_tenant", "email_deliveries_ticket"} <= indexes
    assert tenant_index == ["tenant_id", "email_id"]


async def test_migrating_twice_changes_nothing(settings_for):
    settings = settings_for()
    _old_database(Path(settings.escalation_db_path))
    for _ in range(2):
        store = await TrackingStore.open(settings.escalation_db_path)
        try:
            records = await store.get("EMAIL-UC2-20251107-001", tenant_id="default")
            assert [r.role for r in records] == ["customer", "support_team"]
            assert {r.tenant_id for r in records} == {"default"}
            assert await store.get("EMAIL-UC2-20251107-001", tenant_id=A) == []
        finally:
            await store.close()
    assert len(_rows(settings.escalation_db_path)) == 2
