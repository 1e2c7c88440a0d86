"""The operator routes (role ``operator`` or ``admin``; see handlers/route_roles.py):

- ``GET  /api/v1/handoffs?status=waiting|active|all`` — the tenant's queue, oldest request first
- ``POST /api/v1/handoffs/{session_id}/claim`` — take the conversation (409 ``already_claimed``)
- ``POST /api/v1/handoffs/{session_id}/messages`` ``{"content"}`` — write to the customer (201)
- ``POST /api/v1/handoffs/{session_id}/release`` ``{"note"?}`` — hand it back to the agent

The tenant is the credential's (or ``?tenant_id=`` under AUTH_MODE=none); another tenant's
session is a 404 like a missing one. The operator is the API key (id, and its name as shown) or
the token's ``sub``; under AUTH_MODE=none every caller is the one anonymous operator.
"""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from msev15.agent import handoff
from msev15.agent.handoff import HandoffRefused, Operator
from msev15.common.roles import allows
from msev15.config import SETTINGS
from msev15.events.metrics import METRICS
from msev15.handlers.auth import PRINCIPAL
from msev15.handlers.errors import ApiError, iso
from msev15.handlers.jsonbody import json_response
from msev15.handlers.validation import check_id, invalid, json_object, tenant_from_query
from msev15.logs import service as logs
from msev15.store.base import SESSIONS, Sessions
from msev15.store.handoffs import HANDOFFS, HandoffRecord, Handoffs
from msev15.store.session_events import SESSION_EVENTS, SessionEvents

ANONYMOUS = Operator("anonymous", "Operator")
_LISTED = ("waiting", "active", "all")


def _operator(request: web.Request) -> Operator:
    principal = request.get(PRINCIPAL)
    if principal is None:
        return ANONYMOUS
    return Operator(principal.subject, principal.name or principal.subject)


def _stores(request: web.Request) -> tuple[Sessions, Handoffs, SessionEvents]:
    return request.app[SESSIONS], request.app[HANDOFFS], request.app[SESSION_EVENTS]


def _target(request: web.Request) -> tuple[str, str]:
    session_id = check_id(request.match_info["session_id"], "session_id")
    tenant_id = tenant_from_query(request)
    logs.bind(session_id=session_id, tenant_id=tenant_id)
    return tenant_id, session_id


def _refused(exc: HandoffRefused) -> ApiError:
    return ApiError(exc.status, exc.code, exc.message, **exc.fields)


def _shown(record: HandoffRecord, now: float) -> dict[str, Any]:
    until = record.claimed_at or record.ended_at or now
    shown: dict[str, Any] = {"session_id": record.session_id, "status": record.status, "reason": record.reason,
                             "summary": record.summary, "requested_at": iso(record.requested_at),
                             "waiting_seconds": max(0, int(until - record.requested_at))}
    if record.claimed_by_name is not None and record.claimed_at is not None:
        shown["claimed_by"] = record.claimed_by_name
        shown["claimed_at"] = iso(record.claimed_at)
    return shown


async def _body(request: web.Request, allowed: tuple[str, ...]) -> dict[str, Any]:
    body = await json_object(request) if request.body_exists else {}
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        raise invalid(f"unknown field {unknown[0]!r}; allowed: {', '.join(allowed)}", unknown[0])
    return body


_ECMA_SPACE = frozenset("\t\n\v\f\r \u00a0\u1680\u2028\u2029\u202f\u205f\u3000\ufeff") | frozenset(
    chr(c) for c in range(0x2000, 0x200b))


def _blank(value: str) -> bool:
    """Only whitespace as the documented pattern's ``\\s`` means it (JSON Schema's, ECMA-262's):
    what the document calls blank is what is refused, no more."""
    return all(c in _ECMA_SPACE for c in value)


def _text(body: dict[str, Any], field: str, max_chars: int, *, required: bool) -> str | None:
    value = body.get(field)
    if not required and (value is None or (isinstance(value, str) and _blank(value))):
        return None  # no note, or a blank one: nothing to add
    if not isinstance(value, str) or _blank(value):
        raise invalid(f"{field} is required: a non-blank string", field)
    if len(value) > max_chars or "\x00" in value:
        raise invalid(f"{field} must be at most {max_chars} characters, without NUL characters", field)
    return value


async def list_handoffs(request: web.Request) -> web.Response:
    """The tenant's handoffs (operators).
    ---
    summary: List handoffs (operator queue)
    tags: [handoff]
    parameters:
      - {in: query, name: status, required: false, schema: {type: string, enum: [waiting, active, all],
         default: waiting}}
      - {in: query, name: tenant_id, required: false, schema: {$ref: "#/components/schemas/Id"}}
    responses:
      "200":
        description: Handoffs, oldest request first.
        content:
          application/json:
            schema: {$ref: "#/components/schemas/HandoffList"}
      "403": {$ref: "#/components/responses/Forbidden"}
    """
    tenant_id = tenant_from_query(request)
    status = request.query.get("status", "waiting")
    if status not in _LISTED:
        raise invalid(f"status must be one of {', '.join(_LISTED)}", "status")
    records = await request.app[HANDOFFS].list(tenant_id, status)  # type: ignore[arg-type]  # checked above
    now = time.time()
    return json_response({"handoffs": [_shown(r, now) for r in records]})


async def claim(request: web.Request) -> web.Response:
    """Take a conversation (operators).
    ---
    summary: Claim a handoff
    description: >
      The operator takes the session: one waiting for a person, or one the agent has. Of operators
      claiming at once (on any instance) exactly one wins; the others get 409 already_claimed.
    tags: [handoff]
    parameters:
      - {in: path, name: session_id, required: true, schema: {$ref: "#/components/schemas/Id"}}
      - {in: query, name: tenant_id, required: false, schema: {$ref: "#/components/schemas/Id"}}
    responses:
      "200":
        description: Claimed.
        content:
          application/json:
            schema: {$ref: "#/components/schemas/Claimed"}
      "403": {$ref: "#/components/responses/Forbidden"}
      "404": {$ref: "#/components/responses/SessionNotFound"}
      "409": {$ref: "#/components/responses/HandoffConflict"}
    """
    tenant_id, session_id = _target(request)
    try:
        record = await handoff.claim(*_stores(request), tenant_id, session_id, _operator(request),
                                     request.app[METRICS])
    except HandoffRefused as exc:
        raise _refused(exc) from None
    return json_response({"session_id": session_id, "status": "active",
                          "claimed_by": record.claimed_by_name or record.claimed_by})


async def post_message(request: web.Request) -> web.Response:
    """Write to the customer (the operator holding the conversation).
    ---
    summary: Send an operator message
    tags: [handoff]
    parameters:
      - {in: path, name: session_id, required: true, schema: {$ref: "#/components/schemas/Id"}}
      - {in: query, name: tenant_id, required: false, schema: {$ref: "#/components/schemas/Id"}}
    requestBody:
      required: true
      content:
        application/json:
          schema: {$ref: "#/components/schemas/OperatorMessage"}
    responses:
      "201":
        description: Stored in the history (an assistant message with the operator as author).
        content:
          application/json:
            schema: {$ref: "#/components/schemas/MessagePosted"}
      "403": {$ref: "#/components/responses/Forbidden"}
      "404": {$ref: "#/components/responses/SessionNotFound"}
      "409": {$ref: "#/components/responses/HandoffConflict"}
    """
    tenant_id, session_id = _target(request)
    body = await _body(request, ("content", "tenant_id"))
    content = _text(body, "content", request.app[SETTINGS].max_message_chars, required=True)
    assert content is not None
    try:
        message_id = await handoff.post_message(*_stores(request), tenant_id, session_id, _operator(request),
                                                content)
    except HandoffRefused as exc:
        raise _refused(exc) from None
    return json_response({"message_id": message_id}, status=201)


async def release(request: web.Request) -> web.Response:
    """Hand the conversation back to the agent.
    ---
    summary: Release a handoff
    tags: [handoff]
    parameters:
      - {in: path, name: session_id, required: true, schema: {$ref: "#/components/schemas/Id"}}
      - {in: query, name: tenant_id, required: false, schema: {$ref: "#/components/schemas/Id"}}
    requestBody:
      required: false
      content:
        application/json:
          schema: {$ref: "#/components/schemas/Release"}
    responses:
      "200":
        description: Released; the session's mode is agent again.
        content:
          application/json:
            schema: {$ref: "#/components/schemas/Released"}
      "403": {$ref: "#/components/responses/Forbidden"}
      "404": {$ref: "#/components/responses/SessionNotFound"}
      "409": {$ref: "#/components/responses/HandoffConflict"}
    """
    tenant_id, session_id = _target(request)
    body = await _body(request, ("note", "tenant_id"))
    note = _text(body, "note", request.app[SETTINGS].max_message_chars, required=False)
    principal = request.get(PRINCIPAL)
    admin = principal is None or allows(principal.role, "admin")
    try:
        await handoff.release(*_stores(request), tenant_id, session_id, _operator(request), note,
                              any_holder=admin, metrics=request.app[METRICS])
    except HandoffRefused as exc:
        raise _refused(exc) from None
    return json_response({"session_id": session_id, "status": "released", "mode": "agent"})


def setup_routes(app: web.Application) -> None:
    app.router.add_get("/api/v1/handoffs", list_handoffs)
    app.router.add_post("/api/v1/handoffs/{session_id}/claim", claim)
    app.router.add_post("/api/v1/handoffs/{session_id}/messages", post_message)
    app.router.add_post("/api/v1/handoffs/{session_id}/release", release)



