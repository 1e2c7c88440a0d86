"""Idempotency keys of complaint changes: a retried call answers instead of acting twice.

See :mod:`msev15.mcpkit.meta` for the contract. A change made with a key records the key, a
digest of the request and the complaint it touched, in the transaction of the change itself, so
the two are never apart. A later call with the key, within the retention, gets that complaint as
it is now; the same key with another request is refused.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from typing import Any

from .models import ComplaintError


def request_digest(operation: str, arguments: dict[str, Any]) -> str:
    """What a call asked for, as a short stable digest (operation and validated arguments)."""
    text = json.dumps([operation, arguments], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def recall(conn: sqlite3.Connection, tenant_id: str, key: str, digest: str, cutoff: str) -> str | None:
    """The id of the complaint a call with ``key`` changed since ``cutoff``; None for a new key.

    Raises :class:`ComplaintError` when the key was used for a different request.
    """
    row = conn.execute(
        "SELECT request, complaint_id FROM idempotency_keys WHERE tenant_id = ? AND key = ? AND created_at >= ?",
        (tenant_id, key, cutoff),
    ).fetchone()
    if row is None:
        return None
    if row["request"] != digest:
        raise ComplaintError(f"idempotency key {key!r} was already used for another request")
    return str(row["complaint_id"])


def remember(conn: sqlite3.Connection, tenant_id: str, key: str, digest: str, complaint_id: str,
             stamp: str, cutoff: str) -> None:
    """Record the key with the change (same transaction); forget the keys older than ``cutoff``."""
    conn.execute("DELETE FROM idempotency_keys WHERE created_at < ?", (cutoff,))
    conn.execute(
        "INSERT OR REPLACE INTO idempotency_keys (tenant_id, key, request, complaint_id, created_at) "
        "VALUES (?, ?, ?, ?, ?)",
        (tenant_id, key, digest, complaint_id, stamp),
    )
