"""The SQLite complaint store: records, searches, validation and status changes."""

from __future__ import annotations

import re
import sqlite3
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from msev15.complaints.models import ComplaintError, ComplaintNotFound, IllegalTransition, normalize_id
from msev15.complaints.store import ComplaintStore


class _Clock:
    """A clock that advances one second per reading, so ordering is deterministic."""

    def __init__(self) -> None:
        self.now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ComplaintStore]:
    with ComplaintStore(tmp_path / "db" / "complaints.db", clock=_Clock()) as opened:
        yield opened


def _register(store: ComplaintStore, **overrides: str) -> str:
    values = {"customer_id": "CUST-1", "description": "The parcel arrived damaged"} | overrides
    return store.register(**values).id


# --- register / get ---------------------------------------------------------------------------


def test_register_creates_open_complaint_with_id_and_timestamps(store: ComplaintStore) -> None:
    complaint = store.register(customer_id=" CUST-1 ", description="  Box was crushed ", category="delivery",
                               priority="high", order_id="ORD-1001")
    assert re.fullmatch(r"CMP-[0-9A-F]{8}", complaint.id)
    assert complaint.customer_id == "CUST-1"
    assert complaint.description == "Box was crushed"
    assert (complaint.category, complaint.priority, complaint.status) == ("delivery", "high", "open")
    assert complaint.order_id == "ORD-1001"
    assert complaint.resolution is None and complaint.resolved_at is None and complaint.archived_at is None
    assert complaint.created_at == complaint.updated_at == "2026-01-02T03:04:06.000Z"


def test_register_defaults_category_and_priority(store: ComplaintStore) -> None:
    complaint = store.register(customer_id="CUST-1", description="Something is off")
    assert (complaint.category, complaint.priority, complaint.order_id) == ("other", "medium", None)


def test_get_returns_stored_complaint_and_accepts_lowercase_id(store: ComplaintStore, tmp_path: Path) -> None:
    complaint_id = _register(store)
    assert store.get(complaint_id.lower()).id == complaint_id
    # and it is really on disk
    with ComplaintStore(tmp_path / "db" / "complaints.db") as again:
        assert again.get(complaint_id).description == "The parcel arrived damaged"


def test_get_unknown_id_is_not_found(store: ComplaintStore) -> None:
    with pytest.raises(ComplaintNotFound, match=r"^complaint CMP-00000000 not found$"):
        store.get("CMP-00000000")


def test_get_malformed_id_is_refused(store: ComplaintStore) -> None:
    with pytest.raises(ComplaintError, match=r"complaint_id must look like CMP-1A2B3C4D, got 'ORD-1'"):
        store.get("ORD-1")


@pytest.mark.parametrize("field", ["customer_id", "description"])
def test_register_blank_required_text_is_refused(store: ComplaintStore, field: str) -> None:
    values = {"customer_id": "CUST-1", "description": "ok"} | {field: "   "}
    with pytest.raises(ComplaintError, match=f"^{field} must not be empty$"):
        store.register(**values)


def test_register_unknown_category_is_refused(store: ComplaintStore) -> None:
    with pytest.raises(ComplaintError, match=r"category must be one of product, delivery, billing, service, "
                                             r"other, got 'weather'"):
        store.register(customer_id="CUST-1", description="x", category="weather")


def test_register_unknown_priority_is_refused(store: ComplaintStore) -> None:
    with pytest.raises(ComplaintError, match=r"priority must be one of low, medium, high, urgent"):
        store.register(customer_id="CUST-1", description="x", priority="asap")


def test_register_too_long_description_is_refused(store: ComplaintStore) -> None:
    with pytest.raises(ComplaintError, match=r"description must be at most 4000 characters, got 4001"):
        store.register(customer_id="CUST-1", description="x" * 4001)


def test_register_customer_id_with_spaces_is_refused(store: ComplaintStore) -> None:
    with pytest.raises(ComplaintError, match=r"customer_id must not contain spaces"):
        store.register(customer_id="CUST 1", description="x")


# --- search -----------------------------------------------------------------------------------


def test_search_filters_and_orders_newest_first(store: ComplaintStore) -> None:
    first = _register(store, customer_id="A", category="billing", description="Charged twice")
    second = _register(store, customer_id="A", category="delivery", description="Late parcel",
                       order_id="ORD-9")
    _register(store, customer_id="B", category="billing", description="Wrong invoice 100%")
    assert [c.id for c in store.search(customer_id="A").complaints] == [second, first]
    assert [c.id for c in store.search(category="billing", customer_id="A").complaints] == [first]
    assert [c.id for c in store.search(order_id="ORD-9").complaints] == [second]
    assert store.search(text="CHARGED").complaints[0].id == first  # case-insensitive
    assert store.search(text="100%").count == 1  # LIKE wildcards are literal
    assert store.search(text="1_0").count == 0
    everything = store.search(limit=2)
    assert (everything.count, everything.total) == (2, 3)


def test_search_by_status_and_priority(store: ComplaintStore) -> None:
    urgent = _register(store, priority="urgent")
    _register(store)
    store.resolve(urgent, "Refunded")
    assert [c.id for c in store.search(status="resolved").complaints] == [urgent]
    assert [c.id for c in store.search(priority="urgent", status="resolved").complaints] == [urgent]
    assert store.search(status="archived").total == 0


def test_search_limit_out_of_range_is_refused(store: ComplaintStore) -> None:
    with pytest.raises(ComplaintError, match=r"limit must be between 1 and 100, got 0"):
        store.search(limit=0)


def test_search_unknown_status_is_refused(store: ComplaintStore) -> None:
    with pytest.raises(ComplaintError, match=r"status must be one of open, in_progress, resolved, archived"):
        store.search(status="closed")


# --- update -----------------------------------------------------------------------------------


def test_update_changes_details_and_starts_work(store: ComplaintStore) -> None:
    complaint_id = _register(store)
    updated = store.update(complaint_id, priority="urgent", description="Crushed and wet", status="in_progress",
                           category="delivery", order_id="ORD-7")
    assert (updated.priority, updated.description, updated.status) == ("urgent", "Crushed and wet", "in_progress")
    assert (updated.category, updated.order_id) == ("delivery", "ORD-7")
    assert updated.updated_at > updated.created_at


def test_update_reopens_resolved_complaint_and_clears_resolution(store: ComplaintStore) -> None:
    complaint_id = _register(store)
    store.resolve(complaint_id, "Replaced")
    reopened = store.update(complaint_id, status="in_progress")
    assert (reopened.status, reopened.resolution, reopened.resolved_at) == ("in_progress", None, None)


def test_update_without_changes_is_refused(store: ComplaintStore) -> None:
    complaint_id = _register(store)
    with pytest.raises(ComplaintError, match=r"^nothing to update"):
        store.update(complaint_id)


def test_update_to_resolved_points_to_resolve_tool(store: ComplaintStore) -> None:
    with pytest.raises(ComplaintError, match=r"use resolve_complaint"):
        store.update(_register(store), status="resolved")


def test_update_to_archived_points_to_archive_tool(store: ComplaintStore) -> None:
    with pytest.raises(ComplaintError, match=r"use archive_complaint"):
        store.update(_register(store), status="archived")


def test_update_back_to_open_is_an_illegal_transition(store: ComplaintStore) -> None:
    complaint_id = _register(store)
    store.update(complaint_id, status="in_progress")
    with pytest.raises(IllegalTransition, match=rf"cannot change complaint {complaint_id} from in_progress to open "
                                                r"\(allowed from in_progress: archived, resolved\)"):
        store.update(complaint_id, status="open")


def test_update_archived_complaint_is_refused(store: ComplaintStore) -> None:
    complaint_id = _register(store)
    store.archive(complaint_id)
    with pytest.raises(ComplaintError, match=rf"complaint {complaint_id} is archived and can no longer be changed"):
        store.update(complaint_id, priority="low")


def test_update_unknown_complaint_is_not_found(store: ComplaintStore) -> None:
    with pytest.raises(ComplaintNotFound):
        store.update("CMP-0000ABCD", priority="low")


# --- resolve / archive ------------------------------------------------------------------------


def test_resolve_records_resolution(store: ComplaintStore) -> None:
    complaint_id = _register(store)
    resolved = store.resolve(complaint_id, " Refund issued ")
    assert (resolved.status, resolved.resolution) == ("resolved", "Refund issued")
    assert resolved.resolved_at == resolved.updated_at


def test_resolve_twice_is_refused(store: ComplaintStore) -> None:
    complaint_id = _register(store)
    store.resolve(complaint_id, "Done")
    with pytest.raises(ComplaintError, match=rf"complaint {complaint_id} is already resolved"):
        store.resolve(complaint_id, "Again")


def test_resolve_archived_complaint_is_an_illegal_transition(store: ComplaintStore) -> None:
    complaint_id = _register(store)
    store.archive(complaint_id)
    with pytest.raises(IllegalTransition, match=r"from archived to resolved \(allowed from archived: none: "
                                                r"archived complaints are final\)"):
        store.resolve(complaint_id, "Too late")


def test_resolve_blank_resolution_is_refused(store: ComplaintStore) -> None:
    with pytest.raises(ComplaintError, match=r"^resolution must not be empty$"):
        store.resolve(_register(store), " ")


@pytest.mark.parametrize("before", ["open", "in_progress", "resolved"])
def test_archive_from_any_live_status(store: ComplaintStore, before: str) -> None:
    complaint_id = _register(store)
    if before == "in_progress":
        store.update(complaint_id, status="in_progress")
    elif before == "resolved":
        store.resolve(complaint_id, "Fixed")
    archived = store.archive(complaint_id)
    assert archived.status == "archived" and archived.archived_at == archived.updated_at


def test_archive_twice_is_refused(store: ComplaintStore) -> None:
    complaint_id = _register(store)
    store.archive(complaint_id)
    with pytest.raises(ComplaintError, match=rf"complaint {complaint_id} is already archived"):
        store.archive(complaint_id)


# --- plumbing ---------------------------------------------------------------------------------


def test_normalize_id_strips_and_uppercases() -> None:
    assert normalize_id(" cmp-00ab12cd ") == "CMP-00AB12CD"


def test_concurrent_writers_from_threads_all_land(store: ComplaintStore) -> None:
    def worker(n: int) -> None:
        for i in range(10):
            store.register(customer_id=f"T{n}", description=f"complaint {i}")

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert store.search(limit=100).total == 40


def test_closed_store_refuses_work(tmp_path: Path) -> None:
    store = ComplaintStore(tmp_path / "c.db")
    store.close()
    store.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        store.ping()


def test_unreadable_database_file_raises(tmp_path: Path) -> None:
    bad = tmp_path / "not-a-db"
    bad.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(sqlite3.DatabaseError):
        ComplaintStore(bad)
