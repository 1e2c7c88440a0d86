"""``sendemail`` idempotency: the remembered key, the request it was used for, and the answer a
repeated call gets, rebuilt from the stored delivery records.

The contract is :mod:`msev15.mcpkit.meta`: a retried call carries the key of its first attempt.
The service keeps ``(tenant, key) -> email_id`` in the tracking store, written in the same
transaction as the call's delivery records, so a record set and its key exist together or not
at all. The key also holds a fingerprint of the normalised arguments: the same key with other
arguments is a client bug, refused rather than answered with another ticket's email.

A fresh call builds its result from the same records (:func:`result_from_records`), so a
replayed answer equals the first one field for field.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Callable, Coroutine
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from msev15.escalation.models import (
    ROLES,
    DeliveryRecord,
    EscalationRequest,
    MessageStatus,
    SendResult,
    overall_status,
)
from msev15.mcpkit.meta import (
    IDEMPOTENCY_META_KEY,
    RETENTION_SECONDS,
    idempotency_key_from_meta,
)

log = logging.getLogger("escalation.replay")

# A pending record outside a call running in this process: another process sharing the database
# is sending it, or its call broke off (its records are marked failed at the next start).
STILL_SENDING = ("not finished: still being delivered by another process sharing this database, or "
                 "interrupted (marked failed at the next start)")


class KeyConflict(ValueError):
    """The key was already used, in this tenant, for a sendemail call with other arguments."""

    def __init__(self, key: str) -> None:
        super().__init__(f"idempotency key {key!r} was already used for another sendemail request; "
                         "a new request needs a new key")
        self.key = key


class KeyTaken(Exception):
    """Another process recorded the same ``(tenant, key)`` first (its call is the one that counts)."""

    def __init__(self, key: str) -> None:
        super().__init__(f"idempotency key {key!r} was recorded by another sendemail call at the same time")
        self.key = key


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """One remembered key: the call it answered for and when (UTC, see :func:`utc_stamp`)."""

    tenant_id: str
    key: str
    request_sha256: str
    email_id: str
    created_at: str


def checked_key(raw: object) -> str:
    """``raw`` unchanged if it is a valid idempotency key; ValueError with the contract's sentence."""
    key = idempotency_key_from_meta({IDEMPOTENCY_META_KEY: raw})
    assert key is not None
    return key


def request_fingerprint(request: EscalationRequest) -> str:
    """SHA-256 of the normalised arguments: equal for a faithful retry, different for another request.

    Only the digest is stored, so the key table holds no customer text.
    """
    canonical = json.dumps({"tool": "sendemail", **asdict(request)}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def utc_stamp(moment: datetime) -> str:
    """UTC, to the second, one fixed width: such stamps compare correctly as text (and in SQL)."""
    return moment.astimezone(UTC).isoformat(timespec="seconds")


def forget_before(now: datetime) -> str:
    """Keys created before this stamp are older than the retention and forgotten."""
    return utc_stamp(now - timedelta(seconds=RETENTION_SECONDS))


def result_from_records(records: list[DeliveryRecord]) -> SendResult:
    """The ``sendemail`` result of one call from its delivery records (customer and support team).

    A message counts as sent once the backend accepted it (``sent_at`` is set), whatever the
    provider reported later, so the answer does not change when a status poll moves a message on.
    ``sent_at`` is when the last message finished (accepted or given up).
    """
    by_role = {record.role: record for record in records}
    ordered = [by_role[role] for role in ROLES if role in by_role]
    if not ordered:
        raise LookupError("no delivery records for this call")

    def state(record: DeliveryRecord) -> MessageStatus:
        if record.sent_at:
            return "sent"
        return "pending" if record.status == "pending" else "failed"

    errors = {r.role: (STILL_SENDING if state(r) == "pending" else r.last_error)
              for r in ordered if state(r) != "sent"}
    return SendResult(
        email_id=ordered[0].email_id,
        status=overall_status([state(r) for r in ordered]),
        sent_at=max((r.sent_at or r.updated_at for r in ordered), key=datetime.fromisoformat),
        backend=ordered[0].backend,
        recipients={r.role: r.recipient for r in ordered},
        errors=errors,
    )


@dataclass(frozen=True, slots=True)
class _Running:
    fingerprint: str
    task: asyncio.Task[SendResult]


class RunningCalls:
    """Keyed ``sendemail`` calls running in this process, one task per ``(tenant, key)``.

    The first call starts the task; a repeat that arrives meanwhile (the client's retry after a
    dropped connection) joins it instead of sending in parallel. The task belongs to this object,
    not to the request that started it: a caller that goes away (its connection dropped, its
    request cancelled) does not cut the send its retry is waiting for. :meth:`close` awaits them.
    """

    def __init__(self) -> None:
        self._running: dict[tuple[str, str], _Running] = {}

    def start_or_join(self, tenant_id: str, key: str, fingerprint: str,
                      start: Callable[[], Coroutine[Any, Any, SendResult]]) -> tuple[asyncio.Task[SendResult], bool]:
        """(the task answering this call, whether it was already running). Raises KeyConflict when
        the running call has other arguments."""
        slot = (tenant_id, key)
        running = self._running.get(slot)
        if running is not None:
            if running.fingerprint != fingerprint:
                raise KeyConflict(key)
            return running.task, True
        task = asyncio.create_task(start(), name=f"escalation-sendemail-{tenant_id}")
        self._running[slot] = _Running(fingerprint, task)
        task.add_done_callback(lambda done: self._finished(slot, done))
        return task, False

    def _finished(self, slot: tuple[str, str], task: asyncio.Task[SendResult]) -> None:
        if (running := self._running.get(slot)) is not None and running.task is task:
            del self._running[slot]
        if task.cancelled():
            return
        # Waiting callers get the exception from result(). Bad input and template errors are
        # theirs to report; anything else is a bug, logged here in case no caller is left.
        exc = task.exception()
        if exc is not None and not isinstance(exc, ValueError):
            log.error("sendemail with an idempotency key failed", exc_info=exc)

    async def close(self, timeout: float) -> None:
        """Let running sends finish (each is bounded by its own delivery deadline), cancelling what
        is still running after ``timeout`` seconds; their records stay pending and are marked
        failed at the next start."""
        tasks = [running.task for running in self._running.values()]
        if not tasks:
            return
        _, late = await asyncio.wait(tasks, timeout=timeout)
        for task in late:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
