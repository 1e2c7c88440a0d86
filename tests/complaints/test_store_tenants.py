"""The complaint store keeps tenants apart, and migrates databases from before tenants."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from msev15.common.tenancy import DEFAULT_TENANT as SERVICE_DEFAULT_TENANT
from msev15.common.tenancy import ID_PATTERN as SERVICE_ID_PATTERN
from msev15.complaints.models import (
    DEFAULT_TENANT,
    TENANT_ID_RE,
    ComplaintError,
    ComplaintNotFound,
    check_tenant,
)
from msev15.complaints.store import ComplaintStore

A, B = "acme", "globex"

# The table and indexes as the first release created them, with no tenant column.
_OLD_SCHEMA = """
CREATE TABLE complaints (
    id TEXT PRIMARY KEY, customer_id TEXT NOT NULL, order_id TEXT, category TEXT NOT NULL,
    description TEXT NOT NULL, priority TEXT NOT NULL, status TEXT NOT NULL, resolution TEXT,
    created_at TEXT NOT NULL, updated_at TEXT NOT NULL, resolved_at TEXT, archived_at TEXT
);
CREATE INDEX complaints_customer ON complaints (customer_id, created_at);
CREATE INDEX complaints_order ON complaints (order_id);
CREATE INDEX complaints_status ON complaints (status, created_at);
INSERT INTO complaints VALUES ('CMP-0000AAAA', 'CUST-1', 'ORD-1', 'delivery', 'Old and late', 'high', 'open',
    NULL, '2025-01-01T00:00:00.000Z', '2025-01-01T00:00:00.000Z', NULL, NULL);
"""


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ComplaintStore]:
    with ComplaintStore(tmp_path / "complaints.db") as opened:
        yield opened


def _acme_complaint(store: ComplaintStore) -> str:
    return store.register(customer_id="CUST-1", description="Parcel crushed", order_id="ORD-1", tenant_id=A).id


def _not_found(complaint_id: str) -> str:
    return rf"^complaint {complaint_id} not found$"


# --- the tenant rule --------------------------------------------------------------------------


def test_tenant_rule_and_default_are_the_services() -> None:
    assert TENANT_ID_RE.pattern == SERVICE_ID_PATTERN
    assert DEFAULT_TENANT == SERVICE_DEFAULT_TENANT


@pytest.mark.parametrize("tenant", ["acme", "t1", "a.b_c:d@e-f", "x" * 128])
def test_check_tenant_accepts_service_ids(tenant: str) -> None:
    assert check_tenant(tenant) == tenant


@pytest.mark.parametrize("tenant", ["", " acme", "acme\n", "-acme", "ac me", "acme/x", "x" * 129, "é"])
def test_check_tenant_refuses_malformed_ids(tenant: str) -> None:
    with pytest.raises(ComplaintError, match=r"^tenant_id must be 1-128 characters"):
        check_tenant(tenant)


@pytest.mark.parametrize("tenant", [None, 7, ["acme"]])
def test_check_tenant_refuses_non_strings(tenant: object) -> None:
    with pytest.raises(ComplaintError, match=r"^tenant_id must be a string, got "):
        check_tenant(tenant)


# --- isolation --------------------------------------------------------------------------------


def test_owner_tenant_sees_and_changes_its_complaint(store: ComplaintStore) -> None:
    complaint_id = _acme_complaint(store)
    assert store.get(complaint_id, tenant_id=A).description == "Parcel crushed"
    assert [c.id for c in store.search(tenant_id=A).complaints] == [complaint_id]
    assert store.update(complaint_id, tenant_id=A, status="in_progress").status == "in_progress"
    assert store.resolve(complaint_id, "Replaced", tenant_id=A).status == "resolved"
    assert store.archive(complaint_id, tenant_id=A).status == "archived"


def test_other_tenant_cannot_get_it(store: ComplaintStore) -> None:
    complaint_id = _acme_complaint(store)
    with pytest.raises(ComplaintNotFound, match=_not_found(complaint_id)):
        store.get(complaint_id, tenant_id=B)
    with pytest.raises(ComplaintNotFound, match=_not_found(complaint_id)):
        store.get(complaint_id)  # nor can the default tenant


def test_other_tenant_cannot_find_it_by_any_filter(store: ComplaintStore) -> None:
    _acme_complaint(store)
    filter_sets: list[dict[str, Any]] = [{}, {"customer_id": "CUST-1"}, {"order_id": "ORD-1"}, {"status": "open"},
                                         {"text": "crushed"}]
    for filters in filter_sets:
        found = store.search(tenant_id=B, **filters)
        assert (found.complaints, found.count, found.total) == ([], 0, 0), filters
    assert store.search(tenant_id=A, customer_id="CUST-1").total == 1


def test_other_tenant_cannot_update_it(store: ComplaintStore) -> None:
    complaint_id = _acme_complaint(store)
    with pytest.raises(ComplaintNotFound, match=_not_found(complaint_id)):
        store.update(complaint_id, tenant_id=B, priority="low", description="Hijacked")
    unchanged = store.get(complaint_id, tenant_id=A)
    assert (unchanged.priority, unchanged.description) == ("medium", "Parcel crushed")


def test_other_tenant_cannot_resolve_it(store: ComplaintStore) -> None:
    complaint_id = _acme_complaint(store)
    with pytest.raises(ComplaintNotFound, match=_not_found(complaint_id)):
        store.resolve(complaint_id, "Closed by someone else", tenant_id=B)
    assert store.get(complaint_id, tenant_id=A).status == "open"


def test_other_tenant_cannot_archive_it(store: ComplaintStore) -> None:
    complaint_id = _acme_complaint(store)
    with pytest.raises(ComplaintNotFound, match=_not_found(complaint_id)):
        store.archive(complaint_id, tenant_id=B)
    assert store.get(complaint_id, tenant_id=A).status == "open"


def test_foreign_id_and_missing_id_read_the_same(store: ComplaintStore) -> None:
    complaint_id = _acme_complaint(store)
    missing = "CMP-00000000"
    for call in (lambda cid: store.get(cid, tenant_id=B),
                 lambda cid: store.update(cid, tenant_id=B, priority="low"),
                 lambda cid: store.resolve(cid, "x", tenant_id=B),
                 lambda cid: store.archive(cid, tenant_id=B)):
        messages = []
        for cid in (complaint_id, missing):
            with pytest.raises(ComplaintNotFound) as caught:
                call(cid)
            messages.append(str(caught.value).replace(cid, "<id>"))
        assert messages[0] == messages[1] == "complaint <id> not found"


def test_same_customer_in_two_tenants_stays_apart(store: ComplaintStore) -> None:
    mine = store.register(customer_id="CUST-1", description="Mine", tenant_id=A).id
    theirs = store.register(customer_id="CUST-1", description="Theirs", tenant_id=B).id
    assert [c.id for c in store.search(tenant_id=A, customer_id="CUST-1").complaints] == [mine]
    assert [c.id for c in store.search(tenant_id=B, customer_id="CUST-1").complaints] == [theirs]


def test_calls_without_a_tenant_use_the_default_tenant(store: ComplaintStore) -> None:
    complaint_id = store.register(customer_id="CUST-1", description="No tenant given").id
    assert store.get(complaint_id, tenant_id=DEFAULT_TENANT).id == complaint_id
    assert store.search(tenant_id=A).total == 0


def test_complaints_do_not_expose_the_tenant(store: ComplaintStore) -> None:
    complaint = store.get(_acme_complaint(store), tenant_id=A)
    assert "tenant_id" not in complaint.model_dump()


@pytest.mark.parametrize("method", ["get", "search", "register", "update", "resolve", "archive"])
def test_malformed_tenant_is_refused_by_every_method(store: ComplaintStore, method: str) -> None:
    complaint_id = _acme_complaint(store)
    calls = {
        "get": lambda: store.get(complaint_id, tenant_id="bad tenant"),
        "search": lambda: store.search(tenant_id="bad tenant"),
        "register": lambda: store.register(customer_id="C", description="x", tenant_id="bad tenant"),
        "update": lambda: store.update(complaint_id, tenant_id="bad tenant", priority="low"),
        "resolve": lambda: store.resolve(complaint_id, "x", tenant_id="bad tenant"),
        "archive": lambda: store.archive(complaint_id, tenant_id="bad tenant"),
    }
    with pytest.raises(ComplaintError, match=r"^tenant_id must be 1-128 characters.*got 'bad tenant'$"):
        calls[method]()
    assert store.search(tenant_id=A).total == 1  # nothing was written
    assert store.get(complaint_id, tenant_id=A).status == "open"


# --- migration --------------------------------------------------------------------------------


def _old_database(path: Path) -> None:
    with sqlite3.connect(path) as conn:
        conn.executescript(_OLD_SCHEMA)
    conn.close()


def _schema(path: Path) -> tuple[set[str], set[str]]:
    conn = sqlite3.connect(path)
    try:
        columns = {row[1] for row in conn.execute("PRAGMA table_info(complaints)")}
        indexes = {row[1] for row in conn.execute("PRAGMA index_list(complaints)") if row[3] == "c"}
    finally:
        conn.close()
    return columns, indexes


def test_old_database_gains_the_tenant_column_and_its_rows_become_default(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    _old_database(path)
    with ComplaintStore(path) as store:
        old = store.get("CMP-0000AAAA")  # the default tenant
        assert (old.customer_id, old.description, old.status) == ("CUST-1", "Old and late", "open")
        assert store.search(tenant_id=DEFAULT_TENANT, customer_id="CUST-1").total == 1
        with pytest.raises(ComplaintNotFound, match=_not_found("CMP-0000AAAA")):
            store.get("CMP-0000AAAA", tenant_id=A)
        assert store.resolve("CMP-0000AAAA", "Refunded").status == "resolved"
        new = store.register(customer_id="CUST-1", description="New", tenant_id=A).id
        assert [c.id for c in store.search(tenant_id=A).complaints] == [new]
    columns, indexes = _schema(path)
    assert "tenant_id" in columns
    assert indexes == {"complaints_tenant", "complaints_tenant_customer", "complaints_tenant_order",
                       "complaints_tenant_status"}


def test_migration_runs_once(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    _old_database(path)
    ComplaintStore(path).close()
    with ComplaintStore(path) as again:  # a second open finds the column and changes nothing
        assert again.get("CMP-0000AAAA").id == "CMP-0000AAAA"
    conn = sqlite3.connect(path)
    try:
        tenants = conn.execute("SELECT tenant_id, COUNT(*) FROM complaints GROUP BY tenant_id").fetchall()
    finally:
        conn.close()
    assert tenants == [(DEFAULT_TENANT, 1)]


def test_new_database_has_the_same_schema_as_a_migrated_one(tmp_path: Path) -> None:
    old, new = tmp_path / "old.db", tmp_path / "new.db"
    _old_database(old)
    ComplaintStore(old).close()
    ComplaintStore(new).close()
    assert _schema(old) == _schema(new)


def test_query_plan_uses_a_tenant_index(store: ComplaintStore, tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "complaints.db")
    try:
        plan = " ".join(row[3] for row in conn.execute(
            "EXPLAIN QUERY PLAN SELECT * FROM complaints WHERE tenant_id = ? AND customer_id = ? "
            "ORDER BY created_at DESC", (A, "CUST-1")))
    finally:
        conn.close()
    assert "complaints_tenant_customer" in plan
