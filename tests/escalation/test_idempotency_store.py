"""Idempotency keys in the tracking database: they survive restarts, arrive by an in-place schema
upgrade, are written with their delivery records or not at all, and expire after the retention."""

from __future__ import annotations

import dataclasses
import sqlite3
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from msev15.escalation.models import DeliveryRecord, EscalationRequest, InvalidRequest, MessageStatus, Role
from msev15.escalation.replay import KeyRecord, KeyTaken, request_fingerprint, utc_stamp
from msev15.escalation.schema import SCHEMA_VERSION
from msev15.escalation.server import EscalationServer
from msev15.escalation.service import EscalationService
from msev15.escalation.tracking import TrackingStore
from msev15.mcpkit.meta import IDEMPOTENCY_META_KEY, RETENTION_SECONDS, TENANT_META_KEY
from tests.mcp_calls import as_meta

from .conftest import connect, metric, running, uc2_args
from .test_idempotency import KEY, conflict_message, send, smtp_settings, text_of

# The tables and indexes of schema version 2 (delivery records per tenant, no keys), as that
# release created them, with one delivered call in them.
_VERSION_2 = """
CREATE TABLE email_sequence (
    day TEXT NOT NULL, use_case TEXT NOT NULL, last INTEGER NOT NULL, PRIMARY KEY (day, use_case)
);
CREATE TABLE email_deliveries (
    email_id TEXT NOT NULL, tenant_id TEXT NOT NULL DEFAULT 'default', role TEXT NOT NULL,
    ticket_id TEXT NOT NULL, use_case TEXT NOT NULL, recipient TEXT NOT NULL, backend TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0, status TEXT NOT NULL, provider_message_id TEXT NOT NULL DEFAULT '',
    provider_status TEXT NOT NULL DEFAULT '', created_at TEXT NOT NULL, updated_at TEXT NOT NULL,
    sent_at TEXT NOT NULL DEFAULT '', delivered_at TEXT NOT NULL DEFAULT '', last_error TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (email_id, role)
);
CREATE INDEX email_deliveries_ticket ON email_deliveries (ticket_id);
CREATE INDEX email_deliveries_tenant ON email_deliveries (tenant_id, email_id);
INSERT INTO email_sequence VALUES ('20251107', 'UC2', 1);
INSERT INTO email_deliveries (email_id, tenant_id, role, ticket_id, use_case, recipient, backend, attempts, status,
                              created_at, updated_at, sent_at)
VALUES ('EMAIL-UC2-20251107-001', 'acme', 'customer', 'TKT-2025-000001', 'UC2', 'old@example.com', 'smtp', 1,
        'sent', '2025-11-07T10:00:00+00:00', '2025-11-07T10:00:00+00:00', '2025-11-07T10:00:00+00:00'),
       ('EMAIL-UC2-20251107-001', 'acme', 'bank_team', 'TKT-2025-000001', 'UC2', 'support@example.com', 'smtp', 1,
        'sent', '2025-11-07T10:00:00+00:00', '2025-11-07T10:00:00+00:00', '2025-11-07T10:00:00+00:00');
"""


def _query(db_path: str, sql: str) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(db_path)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def _keys(db_path: str) -> list[tuple[str, str, str]]:
    return _query(db_path, "SELECT tenant_id, idempotency_key, email_id FROM idempotency_keys ORDER BY email_id")


def _create_database(path: str, script: str) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path)
    try:
        conn.executescript(script)
    finally:
        conn.close()


def _records(email_id: str, status: MessageStatus = "pending") -> list[DeliveryRecord]:
    stamp = "2025-11-07T10:00:00+00:00"
    recipients: list[tuple[Role, str]] = [("customer", "jane.doe@example.com"), ("support_team", "support@example.com")]
    return [DeliveryRecord(email_id=email_id, tenant_id="default", role=role, ticket_id="TKT-2025-001234",
                           use_case="UC2", recipient=recipient, backend="smtp", attempts=0, status=status,
                           provider_message_id="", provider_status="", created_at=stamp, updated_at=stamp,
                           sent_at="", delivered_at="", last_error="")
            for role, recipient in recipients]


async def test_a_key_survives_a_restart(settings_for, smtp):
    settings = smtp_settings(settings_for, smtp)
    async with running(settings) as server, connect(server) as client:
        first = await send(client)
    assert _keys(settings.escalation_db_path) == [("default", KEY, first.structured_content["email_id"])]

    async with running(settings) as server, connect(server) as client:
        again = await send(client)
        other = await send(client, **uc2_args(ticket_id="TKT-2025-009999"))
    assert again.structured_content == first.structured_content
    assert other.is_error and text_of(other).endswith(conflict_message(KEY))
    assert len(smtp.messages) == 2


async def test_a_call_cut_by_a_restart_is_answered_failed_and_not_resent(settings_for, smtp):
    settings = smtp_settings(settings_for, smtp)
    store = await TrackingStore.open(settings.escalation_db_path)
    try:  # what a run stopped in the middle of sending leaves behind
        email_id = await store.next_email_id("UC2", date(2025, 11, 7))
        key = KeyRecord(tenant_id="default", key=KEY, request_sha256=request_fingerprint(
            EscalationRequest.parse(**uc2_args())), email_id=email_id, created_at=utc_stamp(datetime.now(UTC)))
        await store.create(_records(email_id), key=key, forget_keys_before="")
    finally:
        await store.close()

    async with running(settings) as server, connect(server) as client:
        first = await send(client)
        second = await send(client)
    assert first.is_error and first.structured_content["email_id"] == email_id
    assert first.structured_content["status"] == "failed"
    assert first.structured_content["recipients"] == {"customer": "jane.doe@example.com",
                                                      "support_team": "support@example.com"}
    for error in first.structured_content["errors"].values():
        assert error.startswith("interrupted: the service stopped before delivery finished")
    assert second.structured_content == first.structured_content
    assert smtp.attempts == 0


async def test_a_key_taken_writes_no_records(settings_for):
    settings = settings_for()
    store = await TrackingStore.open(settings.escalation_db_path)
    try:
        now = utc_stamp(datetime.now(UTC))
        key = KeyRecord(tenant_id="default", key=KEY, request_sha256="a" * 64, email_id="EMAIL-UC2-20251107-001",
                        created_at=now)
        await store.create(_records("EMAIL-UC2-20251107-001"), key=key, forget_keys_before="")
        with pytest.raises(KeyTaken):
            await store.create(_records("EMAIL-UC2-20251107-002"),
                               key=dataclasses.replace(key, email_id="EMAIL-UC2-20251107-002"), forget_keys_before="")
        assert await store.get("EMAIL-UC2-20251107-002", tenant_id="default") == []
        assert len(await store.get("EMAIL-UC2-20251107-001", tenant_id="default")) == 2
        # The store's connection is still usable: the failed transaction was rolled back.
        await store.create(_records("EMAIL-UC2-20251107-003"))
    finally:
        await store.close()
    assert _keys(settings.escalation_db_path) == [("default", KEY, "EMAIL-UC2-20251107-001")]


async def test_a_version_2_database_is_upgraded_in_place(settings_for, smtp, caplog):
    caplog.set_level("INFO")
    settings = smtp_settings(settings_for, smtp)
    _create_database(settings.escalation_db_path, _VERSION_2)
    assert _query(settings.escalation_db_path, "PRAGMA user_version") == [(0,)]

    async with running(settings) as server, connect(server) as client:
        old = await client.call_tool("get_email_status", {"email_id": "EMAIL-UC2-20251107-001"},
                                     meta=as_meta({TENANT_META_KEY: "acme"}))
        first = await send(client, tenant="acme")
        second = await send(client, tenant="acme")

    assert not old.is_error and old.structured_content["status"] == "sent"
    assert old.structured_content["recipients"]["customer"]["recipient"] == "old@example.com"
    # The old database's bank_team record is the support team's now (version 4).
    assert old.structured_content["recipients"]["support_team"]["recipient"] == "support@example.com"
    assert second.structured_content == first.structured_content and len(smtp.messages) == 2
    db = settings.escalation_db_path
    assert _query(db, "PRAGMA user_version") == [(SCHEMA_VERSION,)] == [(4,)]
    assert _query(db, "SELECT count(*) FROM email_deliveries") == [(4,)]
    assert _query(db, "SELECT last FROM email_sequence WHERE day = '20251107'") == [(1,)]
    assert _keys(db) == [("acme", KEY, first.structured_content["email_id"])]
    columns = [row[1] for row in _query(db, "PRAGMA table_info(idempotency_keys)")]
    assert columns == ["tenant_id", "idempotency_key", "request_sha256", "email_id", "created_at"]
    assert [row[2] for row in _query(db, "PRAGMA index_info(idempotency_keys_created)")] == ["created_at"]
    assert _query(db, "SELECT count(*) FROM email_deliveries WHERE role = 'bank_team'") == [(0,)]
    assert any("upgraded to schema version 4" in r.getMessage() for r in caplog.records)


async def test_a_new_database_gets_the_current_version_without_an_upgrade_line(settings_for, caplog):
    caplog.set_level("INFO")
    settings = settings_for()
    async with running(settings):
        pass
    assert _query(settings.escalation_db_path, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
    assert not any("upgraded to schema version" in r.getMessage() for r in caplog.records)


async def test_opening_an_upgraded_database_again_changes_nothing(settings_for):
    settings = settings_for()
    _create_database(settings.escalation_db_path, _VERSION_2)
    for _ in range(2):
        store = await TrackingStore.open(settings.escalation_db_path)
        await store.close()
    assert _query(settings.escalation_db_path, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
    assert _query(settings.escalation_db_path, "SELECT count(*) FROM email_deliveries") == [(2,)]


async def test_a_database_from_a_newer_release_is_refused(settings_for):
    settings = settings_for()
    _create_database(settings.escalation_db_path, _VERSION_2 + f"PRAGMA user_version = {SCHEMA_VERSION + 1};")
    server = EscalationServer(settings)
    with pytest.raises(RuntimeError, match=(
            f"has schema version {SCHEMA_VERSION + 1}, newer than this program supports \\({SCHEMA_VERSION}\\); "
            "upgrade the program or use another ESCALATION_DB_PATH")):
        await server.start()
    assert server.service is None
    assert _query(settings.escalation_db_path, "PRAGMA user_version") == [(SCHEMA_VERSION + 1,)]
    assert "idempotency_keys" not in {row[0] for row in _query(settings.escalation_db_path,
                                                                "SELECT name FROM sqlite_master")}


@dataclass
class Clock:
    now: datetime

    def __call__(self) -> datetime:
        return self.now


async def test_keys_older_than_the_retention_are_forgotten(settings_for, smtp):
    settings = smtp_settings(settings_for, smtp)
    start = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    clock = Clock(start)
    db = settings.escalation_db_path
    async with running(settings, clock=clock) as server, connect(server) as client:
        first = await send(client)
        other = await send(client, key="call-0002", **uc2_args(ticket_id="TKT-2025-009999"))

        clock.now = start + timedelta(seconds=RETENTION_SECONDS)  # exactly the retention: still known
        kept = await send(client)
        assert kept.structured_content == first.structured_content and len(smtp.messages) == 4

        clock.now = start + timedelta(seconds=RETENTION_SECONDS + 1)
        # Not yet deleted (nothing was written since), but already forgotten: a new send.
        assert len(_keys(db)) == 2
        fresh = await send(client)

    assert fresh.structured_content["status"] == "sent"
    assert fresh.structured_content["email_id"] not in {first.structured_content["email_id"],
                                                        other.structured_content["email_id"]}
    assert len(smtp.messages) == 6
    # Writing the new key deleted every expired one, the other key's included.
    assert _keys(db) == [("default", KEY, fresh.structured_content["email_id"])]


async def test_the_service_refuses_a_malformed_key_given_directly(settings_for):
    settings = settings_for()
    service = await EscalationService.open(settings)
    try:
        with pytest.raises(InvalidRequest) as refused:
            await service.send(idempotency_key="has space", **uc2_args())
        sent = await service.send(idempotency_key="call-0003", **uc2_args())
        metrics = service.metrics.render().decode()
    finally:
        await service.close()
    assert refused.value.problems == [
        (f"_meta['{IDEMPOTENCY_META_KEY}'] must be 1-128 characters: letters, digits and . _ : - (starting with a "
         "letter or digit), got 'has space'")]
    assert sent.status == "sent"
    assert metric(metrics, "escalation_requests_rejected_total") == 1
    assert _keys(settings.escalation_db_path) == [("default", "call-0003", sent.email_id)]


async def test_email_ids_count_per_tenant_and_carry_an_unguessable_tag(tmp_path) -> None:
    """A shared per-day counter let one tenant read the others' volume off its own ids."""
    from msev15.escalation.models import EMAIL_ID_RE
    from msev15.escalation.tracking import TrackingStore

    store = await TrackingStore.open(str(tmp_path / "escalation.db"))
    try:
        day = date(2025, 11, 7)
        first_a = await store.next_email_id("UC2", day, "acme")
        for _ in range(5):
            await store.next_email_id("UC2", day, "globex")
        second_a = await store.next_email_id("UC2", day, "acme")
        other = await store.next_email_id("UC2", day, "globex")
    finally:
        await store.close()
    assert first_a.startswith("EMAIL-UC2-20251107-001-") and second_a.startswith("EMAIL-UC2-20251107-002-")
    assert other.startswith("EMAIL-UC2-20251107-006-")  # globex's own sixth, nothing of acme's
    assert len({first_a[-6:], second_a[-6:], other[-6:]}) == 3
    assert all(EMAIL_ID_RE.fullmatch(i) for i in (first_a, second_a, other))
    assert EMAIL_ID_RE.fullmatch("EMAIL-UC2-20251107-001")  # ids issued before still resolve
