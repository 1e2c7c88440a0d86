"""The escalation service: validate, render, send both messages with retries, record, report.

:class:`EscalationService` takes its parts explicitly (settings, backend, tracking store,
templates, metrics, clock); :meth:`EscalationService.open` builds them from settings.

Every call runs in one tenant (the service's tenant id rule, :data:`DEFAULT_TENANT` when the
caller names none): ``send`` records the delivery under it, and ``status`` finds only that
tenant's records, so another tenant's email id is "not found" exactly like an unknown one.

A ``send`` with an idempotency key runs at most once per ``(tenant, key)`` within the key's
retention: a repeat is answered with the first call's result and sends nothing (see
:mod:`msev15.escalation.replay`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from msev15 import __version__
from msev15.common.tenancy import DEFAULT_TENANT, check_tenant
from msev15.escalation.config import EscalationSettings
from msev15.escalation.delivery import Backend, DeliveryError, build_backend, deliver
from msev15.escalation.metrics import Metrics
from msev15.escalation.models import (
    EMAIL_ID_RE,
    ROLES,
    DeliveryOutcome,
    DeliveryRecord,
    EscalationRequest,
    InvalidRequest,
    OutgoingEmail,
    RenderedEmail,
    Role,
    SendResult,
    overall_status,
)
from msev15.escalation.replay import (
    KeyConflict,
    KeyRecord,
    KeyTaken,
    RunningCalls,
    checked_key,
    forget_before,
    request_fingerprint,
    result_from_records,
    utc_stamp,
)
from msev15.escalation.templates import (
    SUPPORT_TEAM_TEMPLATE,
    TemplateError,
    TemplateRegistry,
    customer_template_name,
    template_values,
)
from msev15.escalation.tracking import TrackingStore

log = logging.getLogger("escalation.service")

_ROLE_LOG = {"customer": "customer", "support_team": "support team"}


def mask_email(address: str) -> str:
    """``jane.doe@example.com`` -> ``j***e@example.com``: enough to recognise, not to harvest."""
    local, _, domain = address.partition("@")
    if len(local) <= 2:
        shown = local[:1] + "***"
    else:
        shown = f"{local[0]}***{local[-1]}"
    return f"{shown}@{domain}"


def _now() -> datetime:
    return datetime.now().astimezone()


class EmailNotFound(LookupError):
    """No record of this email id in the caller's tenant (it may exist in another: never say so)."""

    def __init__(self, email_id: str) -> None:
        super().__init__(f"No email with id {email_id!r}")
        self.email_id = email_id


def checked_tenant(raw: object) -> str:
    """``raw`` unchanged if it is a valid tenant id; :class:`InvalidRequest` otherwise."""
    try:
        return check_tenant(raw)
    except ValueError as exc:
        raise InvalidRequest([str(exc)]) from None


class EscalationService:
    def __init__(self, settings: EscalationSettings, backend: Backend, store: TrackingStore, *,
                 templates: TemplateRegistry | None = None, metrics: Metrics | None = None,
                 clock: Callable[[], datetime] = _now) -> None:
        self.settings = settings
        self.backend = backend
        self.store = store
        self.templates = templates or TemplateRegistry.default()
        self.metrics = metrics or Metrics()
        self.clock = clock
        self.started_at = time.monotonic()
        self.last_delivery: dict[str, Any] | None = None
        self._keyed = RunningCalls()

    @classmethod
    async def open(cls, settings: EscalationSettings, *, backend: Backend | None = None,
                   templates: TemplateRegistry | None = None,
                   clock: Callable[[], datetime] = _now) -> EscalationService:
        """Open the tracking store and the backend; close with :meth:`close`."""
        store = await TrackingStore.open(settings.escalation_db_path)
        try:
            interrupted = await store.fail_pending("interrupted: the service stopped before delivery finished",
                                                   clock().isoformat(timespec="seconds"))
            if interrupted:
                log.warning("%d message(s) left pending by an earlier run are now marked failed", interrupted)
            service = cls(settings, backend or build_backend(settings), store, templates=templates, clock=clock)
        except BaseException:
            await store.close()
            raise
        try:
            log.info("Email backend: %s (%s)", service.backend.name, service.backend.description)
            await service._probe_backend()
        except BaseException:
            await service.close()
            raise
        return service

    async def _probe_backend(self) -> None:
        """A probe, not a gate: the service starts either way, and sends retry on their own."""
        try:
            async with asyncio.timeout(min(5.0, self.settings.email_timeout_seconds)):
                await self.backend.check()
        except DeliveryError as exc:
            log.warning("Email backend %s is not reachable yet: %s (sends will retry)", self.backend.name, exc)
        except TimeoutError:
            log.warning("Email backend %s did not answer the start-up probe in time (sends will retry)",
                        self.backend.name)

    async def close(self) -> None:
        """Wait for keyed sends still running (a caller may be gone, its retry may come), then close."""
        try:
            try:
                await self._keyed.close(timeout=self.settings.email_timeout_seconds + 1)
            finally:
                await self.backend.close()
        finally:
            await self.store.close()

    # --- sendemail ---------------------------------------------------------------------------

    def _render(self, name: str, values: dict[str, str]) -> RenderedEmail:
        started = time.perf_counter()
        rendered = self.templates.render(name, values)
        self.metrics.render_seconds.labels(template=name).observe(time.perf_counter() - started)
        return rendered

    def _outgoing(self, rendered: RenderedEmail, to: str, request: EscalationRequest, email_id: str) -> OutgoingEmail:
        return OutgoingEmail(
            sender=self.settings.sender_email,
            sender_name=self.settings.sender_name,
            to=to,
            subject=rendered.subject,
            text=rendered.text,
            html=rendered.html,
            headers=(("X-Ticket-ID", request.ticket_id), ("X-Escalation-Email-ID", email_id),
                     ("X-Use-Case", request.use_case)),
        )

    async def send(self, *, tenant_id: str = DEFAULT_TENANT, idempotency_key: str | None = None,
                   **arguments: Any) -> SendResult:
        """The ``sendemail`` tool, recorded in ``tenant_id``.

        With ``idempotency_key``, a call whose key the tenant already used (within the retention)
        sends nothing: it gets the first call's result, waiting for it if it is still running.

        Raises InvalidRequest (bad arguments, tenant or key), KeyConflict (the key was used for
        other arguments) or TemplateError; delivery problems are in the result.
        """
        started = time.perf_counter()
        try:
            tenant_id = checked_tenant(tenant_id)
            request = EscalationRequest.parse(**arguments)
            if idempotency_key is not None:
                idempotency_key = checked_key(idempotency_key)
        except ValueError as exc:
            self.metrics.rejected.inc()
            if isinstance(exc, InvalidRequest):
                raise
            raise InvalidRequest([str(exc)]) from None
        if idempotency_key is None:
            return await self._send_new(tenant_id, request, started)
        fingerprint = request_fingerprint(request)
        try:
            task, joined = self._keyed.start_or_join(
                tenant_id, idempotency_key, fingerprint,
                lambda: self._send_keyed(tenant_id, idempotency_key, fingerprint, request, started))
        except KeyConflict:
            self.metrics.rejected.inc()
            raise
        if joined:
            self.metrics.replayed.inc()
        # Waiting does not cancel the task when this caller is cancelled: its retry may need it.
        await asyncio.wait({task})
        result = task.result()
        if joined:
            self._log_replay(request, tenant_id, result, "the first call was still running")
        return result

    async def _send_keyed(self, tenant_id: str, key: str, fingerprint: str, request: EscalationRequest,
                          started: float) -> SendResult:
        """The first of the running calls with this key: replay what the store remembers, else send."""
        cutoff = forget_before(self.clock())
        known = await self.store.find_key(tenant_id, key, not_before=cutoff)
        if known is None:
            try:
                return await self._send_new(tenant_id, request, started, key=(key, fingerprint), cutoff=cutoff)
            except KeyTaken:  # another process sharing the database recorded it first
                known = await self.store.find_key(tenant_id, key, not_before=cutoff)
                if known is None:
                    raise
        if known.request_sha256 != fingerprint:
            self.metrics.rejected.inc()
            raise KeyConflict(key)
        result = result_from_records(await self.store.get(known.email_id, tenant_id=tenant_id))
        self.metrics.replayed.inc()
        self._log_replay(request, tenant_id, result, "answered from the stored delivery records")
        return result

    def _log_replay(self, request: EscalationRequest, tenant_id: str, result: SendResult, how: str) -> None:
        log.info("Repeated sendemail for ticket %s (tenant %s) answered with email %s (%s, %s); nothing sent again",
                 request.ticket_id, tenant_id, result.email_id, result.status, how)

    async def _send_new(self, tenant_id: str, request: EscalationRequest, started: float, *,
                        key: tuple[str, str] | None = None, cutoff: str = "") -> SendResult:
        """Render, record (with the idempotency ``key, fingerprint`` when given, forgetting the keys
        created before ``cutoff``: the bound the caller looked the key up with), deliver, report."""
        now = self.clock()
        values = template_values(request, timestamp=now, ticket_base_url=self.settings.ticket_base_url,
                                 admin_ticket_base_url=self.settings.admin_ticket_base_url,
                                 company_name=self.settings.company_name,
                                 support_team=self.settings.support_team_name)
        rendered: dict[Role, RenderedEmail] = {
            "customer": self._render(customer_template_name(request.use_case), values),
            "support_team": self._render(SUPPORT_TEAM_TEMPLATE, values),
        }
        recipients: dict[str, str] = {"customer": request.customer_email,
                                       "support_team": self.settings.support_team_email}
        email_id = await self.store.next_email_id(request.use_case, now.date(), tenant_id)
        log.info("Sending email for ticket %s (%s) as %s (tenant %s)", request.ticket_id, request.use_case, email_id,
                 tenant_id)
        log.debug("%s recipients: customer %s, support team %s", email_id, recipients["customer"],
                  recipients["support_team"])

        try:
            outgoing = {role: self._outgoing(rendered[role], recipients[role], request, email_id) for role in ROLES}
        except ValueError as exc:  # a (custom) template produced something no mail header may hold
            raise TemplateError(str(exc)) from None

        stamp = now.isoformat(timespec="seconds")
        remembered = None if key is None else KeyRecord(tenant_id=tenant_id, key=key[0], request_sha256=key[1],
                                                        email_id=email_id, created_at=utc_stamp(now))
        await self.store.create([
            DeliveryRecord(email_id=email_id, tenant_id=tenant_id, role=role, ticket_id=request.ticket_id,
                           use_case=request.use_case, recipient=recipients[role], backend=self.backend.name,
                           attempts=0, status="pending", provider_message_id="", provider_status="",
                           created_at=stamp, updated_at=stamp, sent_at="", delivered_at="", last_error="")
            for role in ROLES
        ], key=remembered, forget_keys_before=cutoff)
        deadline = asyncio.get_running_loop().time() + self.settings.email_timeout_seconds
        async with asyncio.TaskGroup() as group:
            tasks = {
                role: group.create_task(
                    self._deliver_one(email_id, role, outgoing[role], deadline),
                    name=f"escalation-send-{email_id}-{role}")
                for role in ROLES
            }
        outcomes = {role: task.result() for role, task in tasks.items()}

        status = overall_status(["sent" if o.ok else "failed" for o in outcomes.values()])
        self.metrics.emails.labels(use_case=request.use_case, status=status).inc()
        self.metrics.send_seconds.labels(use_case=request.use_case).observe(time.perf_counter() - started)
        finished = self.clock()
        self.last_delivery = {"email_id": email_id, "status": status, "at": finished.isoformat(timespec="seconds")}
        if status != "sent":
            log.error("Email %s for ticket %s: %s", email_id, request.ticket_id, status)
        # Built from the records, exactly as a replay of this call will be, so both answers match.
        return result_from_records(await self.store.get(email_id, tenant_id=tenant_id))

    async def _deliver_one(self, email_id: str, role: Role, email: OutgoingEmail, deadline: float) -> DeliveryOutcome:
        async def record_failure(attempt: int, error: str) -> None:
            await self.store.update(email_id, role, attempts=attempt, last_error=error,
                                    updated_at=self.clock().isoformat(timespec="seconds"))

        try:
            prepared = self.backend.prepare(email, f"{email_id}.{role}")
        except ValueError as exc:  # e.g. a header the message format refuses
            outcome = DeliveryOutcome(ok=False, attempts=0, error=f"cannot build the message: {exc}")
        else:
            outcome = await deliver(self.backend, prepared, attempts=self.settings.email_retry_count,
                                    base_delay=self.settings.email_retry_base_seconds, deadline=deadline,
                                    on_failure=record_failure)
        stamp = self.clock().isoformat(timespec="seconds")
        await self.store.update(
            email_id, role, attempts=outcome.attempts, status="sent" if outcome.ok else "failed",
            provider_message_id=outcome.provider_message_id, updated_at=stamp,
            sent_at=stamp if outcome.ok else "", last_error=outcome.error,
        )
        self.metrics.message_done(role, self.backend.name, outcome.ok, outcome.attempts)
        if outcome.ok:
            log.info("Email sent to %s: %s", _ROLE_LOG[role], mask_email(email.to))
        else:
            log.error("Email to %s %s failed: %s", _ROLE_LOG[role], mask_email(email.to), outcome.error)
        return outcome

    # --- get_email_status -------------------------------------------------------------------

    async def status(self, email_id: Any, *, tenant_id: str = DEFAULT_TENANT) -> dict[str, Any]:
        """The ``get_email_status`` tool: the records of ``tenant_id``'s email, refreshed from the
        provider when it can say more. Raises InvalidRequest, or EmailNotFound for an id that is
        unknown or another tenant's (with the same message, so the two cannot be told apart)."""
        tenant_id = checked_tenant(tenant_id)
        if not isinstance(email_id, str) or not EMAIL_ID_RE.fullmatch(email_id.strip()):
            raise InvalidRequest([f"email_id must look like EMAIL-UC2-20251107-001-K7Q2MZ, got {email_id!r}"[:200]])
        email_id = email_id.strip()
        records = await self.store.get(email_id, tenant_id=tenant_id)
        if not records:
            raise EmailNotFound(email_id)
        poll_errors: dict[str, str] = {}
        refreshed = []
        for record in records:
            if record.status == "sent" and record.backend == self.backend.name and record.provider_message_id:
                try:
                    record = await self._refresh(record)
                except DeliveryError as exc:
                    poll_errors[record.role] = str(exc)
            refreshed.append(record)
        first = refreshed[0]
        result: dict[str, Any] = {
            "email_id": email_id,
            "ticket_id": first.ticket_id,
            "use_case": first.use_case,
            "status": overall_status([r.status for r in refreshed]),
            "created_at": first.created_at,
            "recipients": {r.role: r.to_dict() for r in refreshed},
        }
        if poll_errors:
            result["poll_errors"] = poll_errors
        return result

    async def _refresh(self, record: DeliveryRecord) -> DeliveryRecord:
        word = await self.backend.poll(record.provider_message_id)
        if word is None or (word.status == record.status and word.provider_status == record.provider_status):
            return record
        stamp = self.clock().isoformat(timespec="seconds")
        changes: dict[str, Any] = {"status": word.status, "provider_status": word.provider_status,
                                   "updated_at": stamp}
        if word.status == "delivered":
            changes["delivered_at"] = stamp
        if word.status == "failed":
            changes["last_error"] = word.error
            log.error("Provider reports %s to %s failed: %s", record.email_id, mask_email(record.recipient),
                      word.error)
        await self.store.update(record.email_id, record.role, **changes)
        return dataclasses.replace(record, **changes)

    # --- health -------------------------------------------------------------------------------

    async def health(self, detailed: bool = True) -> tuple[bool, dict[str, Any]]:
        """(healthy, body). Only ``detailed`` bodies (for callers holding the bearer token) name
        the backend (an outbox path, an SMTP host), the templates, the database error and the
        last delivery: a probe needs the status, not where mail goes or what was last sent."""
        try:
            await self.store.ping()
            database = "ok"
        except Exception as exc:  # any failure here means "not healthy", reported, not raised
            database = f"error: {exc}"
        ok = database == "ok"
        summary = {"status": "ok" if ok else "unavailable", "service": "escalation-comms", "version": __version__,
                   "uptime_seconds": round(time.monotonic() - self.started_at, 1)}
        if not detailed:
            return ok, {**summary, "database": "ok" if ok else "error"}
        return ok, {
            **summary,
            "profile": self.settings.profile,
            "backend": self.backend.name,
            "backend_detail": self.backend.description,
            "database": database,
            "templates": self.templates.names(),
            "last_delivery": self.last_delivery,
        }
