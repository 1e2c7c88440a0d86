"""SQLite storage of complaints.

Synchronous ``sqlite3`` on purpose: the MCP server runs synchronous tools in worker threads, so
one connection guarded by a lock is simple and safe; read-modify-write steps run inside
``BEGIN IMMEDIATE`` so two server processes sharing a file cannot interleave them.
"""

from __future__ import annotations

import logging
import secrets
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from msev15.mcpkit.meta import RETENTION_SECONDS

from .models import (
    CATEGORIES,
    DEFAULT_TENANT,
    ID_PREFIX,
    MAX_ID_CHARS,
    MAX_TEXT_CHARS,
    PRIORITIES,
    STATUSES,
    Complaint,
    ComplaintError,
    ComplaintNotFound,
    SearchResult,
    check_tenant,
    check_transition,
    normalize_id,
)
from .replay import recall, remember, request_digest
from .schema import migrate

log = logging.getLogger("complaints.store")

# What a Complaint holds: the tenant is the caller's own, so it is never returned.
_COLUMNS = ", ".join(Complaint.model_fields)

MAX_SEARCH_LIMIT = 100


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _timestamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _stamps(moment: datetime) -> tuple[str, str]:
    """The timestamp of a change made at ``moment``, and the cutoff of the idempotency keys."""
    return _timestamp(moment), _timestamp(moment - timedelta(seconds=RETENTION_SECONDS))


def _text(field: str, value: str, limit: int) -> str:
    """Trimmed, non-empty, at most ``limit`` characters."""
    value = value.strip()
    if not value:
        raise ComplaintError(f"{field} must not be empty")
    if len(value) > limit:
        raise ComplaintError(f"{field} must be at most {limit} characters, got {len(value)}")
    return value


def _identifier(field: str, value: str) -> str:
    value = _text(field, value, MAX_ID_CHARS)
    if any(ch.isspace() or not ch.isprintable() for ch in value):
        raise ComplaintError(f"{field} must not contain spaces or control characters, got {value!r}")
    return value


def _choice(field: str, value: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ComplaintError(f"{field} must be one of {', '.join(choices)}, got {value!r}")
    return value


def _like(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


class ComplaintStore:
    """Complaints in one SQLite file, kept apart per tenant.

    Every method works inside one tenant (``tenant_id``, default :data:`DEFAULT_TENANT`): another
    tenant's complaints are never found, listed or changed, and another tenant's complaint id is
    "not found" exactly like an id that does not exist. Every method is thread-safe and raises
    :class:`ComplaintError` (with a readable message) for requests it refuses.

    The writes take an optional ``idempotency_key`` (see :mod:`msev15.complaints.replay`): a
    repeat of a change already made with the key returns the complaint and changes nothing.
    """

    def __init__(self, path: str | Path, *, clock: Callable[[], datetime] = _utc_now) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._clock = clock
        self._lock = threading.Lock()
        # Autocommit mode: transactions are opened explicitly in _transaction().
        self._conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=10.0)
        self._conn.row_factory = sqlite3.Row
        self._closed = False
        try:
            self._conn.execute("PRAGMA journal_mode=WAL")
            with self._transaction() as conn:
                migrate(conn, self.path)
        except sqlite3.Error:
            self._conn.close()
            raise

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._conn.close()

    def __enter__(self) -> ComplaintStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            if self._closed:
                raise RuntimeError("complaint store is closed")
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def ping(self) -> None:
        """Raise if the database cannot be read (for health checks)."""
        with self._lock:
            if self._closed:
                raise RuntimeError("complaint store is closed")
            self._conn.execute("SELECT 1 FROM complaints LIMIT 1").fetchall()

    # --- reads ------------------------------------------------------------------------------

    @staticmethod
    def _row(row: sqlite3.Row) -> Complaint:
        return Complaint.model_validate(dict(row))

    @staticmethod
    def _load(conn: sqlite3.Connection, tenant_id: str, complaint_id: str) -> Complaint:
        row = conn.execute(
            f"SELECT {_COLUMNS} FROM complaints WHERE id = ? AND tenant_id = ?", (complaint_id, tenant_id)
        ).fetchone()
        if row is None:  # missing, or another tenant's: the caller cannot tell which
            raise ComplaintNotFound(complaint_id)
        return ComplaintStore._row(row)

    def get(self, complaint_id: str, *, tenant_id: str = DEFAULT_TENANT) -> Complaint:
        tenant_id = check_tenant(tenant_id)
        complaint_id = normalize_id(complaint_id)
        with self._transaction() as conn:
            return self._load(conn, tenant_id, complaint_id)

    def search(
        self,
        *,
        tenant_id: str = DEFAULT_TENANT,
        customer_id: str | None = None,
        order_id: str | None = None,
        status: str | None = None,
        category: str | None = None,
        priority: str | None = None,
        text: str | None = None,
        limit: int = 20,
    ) -> SearchResult:
        """The tenant's complaints matching every given filter, newest first; ``text`` matches
        the description case-insensitively."""
        if not 1 <= limit <= MAX_SEARCH_LIMIT:
            raise ComplaintError(f"limit must be between 1 and {MAX_SEARCH_LIMIT}, got {limit}")
        where: list[str] = ["tenant_id = ?"]
        params: list[Any] = [check_tenant(tenant_id)]
        if customer_id is not None:
            where.append("customer_id = ?")
            params.append(_identifier("customer_id", customer_id))
        if order_id is not None:
            where.append("order_id = ?")
            params.append(_identifier("order_id", order_id))
        for field, value, choices in (
            ("status", status, STATUSES),
            ("category", category, CATEGORIES),
            ("priority", priority, PRIORITIES),
        ):
            if value is not None:
                where.append(f"{field} = ?")
                params.append(_choice(field, value, choices))
        if text is not None:
            where.append("description LIKE ? ESCAPE '\\'")
            params.append(_like(_text("query", text, MAX_TEXT_CHARS)))
        clause = f"WHERE {' AND '.join(where)}"
        with self._transaction() as conn:
            total = conn.execute(f"SELECT COUNT(*) FROM complaints {clause}", params).fetchone()[0]
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM complaints {clause} ORDER BY created_at DESC, rowid DESC LIMIT ?",
                [*params, limit],
            ).fetchall()
        found = [self._row(row) for row in rows]
        return SearchResult(complaints=found, count=len(found), total=total)

    # --- writes -----------------------------------------------------------------------------

    def _change(self, tenant_id: str, key: str | None, digest: str,
                apply: Callable[[sqlite3.Connection, str], Complaint]) -> tuple[Complaint, bool]:
        """``apply(conn, now)`` in one transaction, recording ``key`` with it; (complaint, changed).

        When the tenant already holds ``key`` for this request, nothing is applied: the complaint
        it changed is returned as it is now, with ``changed`` False.
        """
        with self._transaction() as conn:
            now, cutoff = _stamps(self._clock())
            if key is not None and (done := recall(conn, tenant_id, key, digest, cutoff)) is not None:
                log.info("repeated request for complaint %s answered without a change (tenant %s)", done, tenant_id)
                return self._load(conn, tenant_id, done), False
            complaint = apply(conn, now)
            if key is not None:
                remember(conn, tenant_id, key, digest, complaint.id, now, cutoff)
            return complaint, True

    def register(
        self,
        *,
        customer_id: str,
        description: str,
        category: str = "other",
        priority: str = "medium",
        order_id: str | None = None,
        tenant_id: str = DEFAULT_TENANT,
        idempotency_key: str | None = None,
    ) -> Complaint:
        tenant_id = check_tenant(tenant_id)
        request = {
            "customer_id": _identifier("customer_id", customer_id),
            "order_id": None if order_id is None else _identifier("order_id", order_id),
            "category": _choice("category", category, CATEGORIES),
            "description": _text("description", description, MAX_TEXT_CHARS),
            "priority": _choice("priority", priority, PRIORITIES),
        }

        def insert(conn: sqlite3.Connection, now: str) -> Complaint:
            values = {"tenant_id": tenant_id, **request, "status": "open", "created_at": now, "updated_at": now}
            for _ in range(8):
                # Ids are unique across tenants (the primary key), and random, so they reveal nothing.
                complaint_id = ID_PREFIX + secrets.token_hex(4).upper()
                try:
                    conn.execute(
                        f"INSERT INTO complaints (id, {', '.join(values)}) VALUES (?{', ?' * len(values)})",
                        (complaint_id, *values.values()),
                    )
                except sqlite3.IntegrityError:
                    continue  # id collision: draw another
                return self._load(conn, tenant_id, complaint_id)
            raise RuntimeError("could not allocate a complaint id")  # pragma: no cover - 8 collisions in 2**32

        complaint, created = self._change(tenant_id, idempotency_key, request_digest("register", request), insert)
        if created:
            log.info("registered complaint %s for customer %s (tenant %s)", complaint.id, complaint.customer_id,
                     tenant_id)
        return complaint

    @staticmethod
    def _write(
        conn: sqlite3.Connection, tenant_id: str, complaint_id: str, changes: dict[str, Any], now: str
    ) -> Complaint:
        changes["updated_at"] = now
        assignments = ", ".join(f"{column} = ?" for column in changes)
        conn.execute(
            f"UPDATE complaints SET {assignments} WHERE id = ? AND tenant_id = ?",
            (*changes.values(), complaint_id, tenant_id),
        )
        return ComplaintStore._load(conn, tenant_id, complaint_id)

    def update(
        self,
        complaint_id: str,
        *,
        tenant_id: str = DEFAULT_TENANT,
        description: str | None = None,
        category: str | None = None,
        priority: str | None = None,
        order_id: str | None = None,
        status: str | None = None,
        idempotency_key: str | None = None,
    ) -> Complaint:
        """Change details and/or move the complaint to ``in_progress`` (also reopens a resolved
        one). Resolving and archiving have their own methods: they record more than a status."""
        tenant_id = check_tenant(tenant_id)
        complaint_id = normalize_id(complaint_id)
        changes: dict[str, Any] = {}
        if description is not None:
            changes["description"] = _text("description", description, MAX_TEXT_CHARS)
        if category is not None:
            changes["category"] = _choice("category", category, CATEGORIES)
        if priority is not None:
            changes["priority"] = _choice("priority", priority, PRIORITIES)
        if order_id is not None:
            changes["order_id"] = _identifier("order_id", order_id)
        if status is not None:
            _choice("status", status, STATUSES)
            if status == "resolved":
                raise ComplaintError("to resolve a complaint use resolve_complaint, which records the resolution")
            if status == "archived":
                raise ComplaintError("to archive a complaint use archive_complaint")
        if not changes and status is None:
            raise ComplaintError("nothing to update: give at least one of description, category, priority, "
                                 "order_id or status")
        digest = request_digest("update", {"complaint_id": complaint_id, "status": status, **changes})

        def apply(conn: sqlite3.Connection, now: str) -> Complaint:
            current = self._load(conn, tenant_id, complaint_id)
            if current.status == "archived":
                raise ComplaintError(f"complaint {complaint_id} is archived and can no longer be changed")
            if status is not None and status != current.status:
                check_transition(complaint_id, current.status, status)
                changes["status"] = status
                if current.status == "resolved":  # reopened: the old resolution no longer holds
                    changes["resolution"] = None
                    changes["resolved_at"] = None
            return self._write(conn, tenant_id, complaint_id, changes, now)

        updated, changed = self._change(tenant_id, idempotency_key, digest, apply)
        if changed:
            log.info("updated complaint %s (%s; tenant %s)", complaint_id, ", ".join(sorted(changes)), tenant_id)
        return updated

    def resolve(self, complaint_id: str, resolution: str, *, tenant_id: str = DEFAULT_TENANT,
                idempotency_key: str | None = None) -> Complaint:
        tenant_id = check_tenant(tenant_id)
        complaint_id = normalize_id(complaint_id)
        resolution = _text("resolution", resolution, MAX_TEXT_CHARS)

        def apply(conn: sqlite3.Connection, now: str) -> Complaint:
            current = self._load(conn, tenant_id, complaint_id)
            if current.status == "resolved":
                raise ComplaintError(f"complaint {complaint_id} is already resolved")
            check_transition(complaint_id, current.status, "resolved")
            changes = {"status": "resolved", "resolution": resolution, "resolved_at": now}
            return self._write(conn, tenant_id, complaint_id, changes, now)

        digest = request_digest("resolve", {"complaint_id": complaint_id, "resolution": resolution})
        updated, changed = self._change(tenant_id, idempotency_key, digest, apply)
        if changed:
            log.info("resolved complaint %s (tenant %s)", complaint_id, tenant_id)
        return updated

    def archive(self, complaint_id: str, *, tenant_id: str = DEFAULT_TENANT,
                idempotency_key: str | None = None) -> Complaint:
        tenant_id = check_tenant(tenant_id)
        complaint_id = normalize_id(complaint_id)

        def apply(conn: sqlite3.Connection, now: str) -> Complaint:
            current = self._load(conn, tenant_id, complaint_id)
            if current.status == "archived":
                raise ComplaintError(f"complaint {complaint_id} is already archived")
            check_transition(complaint_id, current.status, "archived")
            return self._write(conn, tenant_id, complaint_id, {"status": "archived", "archived_at": now}, now)

        digest = request_digest("archive", {"complaint_id": complaint_id})
        updated, changed = self._change(tenant_id, idempotency_key, digest, apply)
        if changed:
            log.info("archived complaint %s (tenant %s)", complaint_id, tenant_id)
        return updated
