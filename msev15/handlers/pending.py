"""A session's pending calls: list them, and decide one (approve, reject, or a client tool's output).

The decision that answers the last waiting call of a paused step starts the continuation turn
(queued under the session's one-turn-at-a-time rule, wherever the session's turns run); its id is
in the reply, and its events are followed like any turn's. The store decides atomically, so of two
deciders of one call exactly one gets 202 and the other 409, and exactly one continuation starts.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from msev15.agent.context import RUNNER
from msev15.common.roles import allows
from msev15.config import SETTINGS
from msev15.events.turnlog import TurnRecord
from msev15.events.types import ClientTool
from msev15.handlers.chat import start_turn
from msev15.handlers.errors import ApiError
from msev15.handlers.ratelimit import TENANT_COUNTED
from msev15.handlers.roles import approver_role, caller_role
from msev15.handlers.route_roles import forbidden
from msev15.handlers.validation import check_id, invalid, json_object, tenant_from_query
from msev15.logs import service as logs
from msev15.store.pending import PENDING, AlreadyDecided, PausedTurn, PendingNotFound

MAX_REASON_CHARS = 1000
MAX_CALL_ID_CHARS = 256


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _session(request: web.Request) -> tuple[str, str]:
    session_id = check_id(request.match_info["session_id"], "session_id")
    tenant_id = tenant_from_query(request)
    logs.bind(session_id=session_id, tenant_id=tenant_id)
    return tenant_id, session_id


def _not_found(call_id: str, why: str = "") -> ApiError:
    return ApiError(404, "pending_not_found",
                    why or "No call of this session waits for a decision under that id.", call_id=call_id)


def pending_view(paused: PausedTurn | None) -> list[dict[str, Any]]:
    """The undecided calls, as ``GET .../pending`` lists them."""
    if paused is None:
        return []
    view = []
    for waiting in paused.undecided():
        call = paused.call(waiting["call_id"])
        view.append({"kind": waiting["kind"], "call_id": call["id"], "name": call["name"],
                     "arguments": _arguments(call["arguments"]), "turn_id": paused.turn_id,
                     "requested_at": _iso(paused.requested_at), "expires_at": _iso(paused.expires_at)})
    return view


def _arguments(raw: str) -> Any:
    try:
        return json.loads(raw or "{}")
    except ValueError:
        return raw


def decision_of(kind: str, body: dict[str, Any]) -> dict[str, Any]:
    """The decision a body states for a call of ``kind``; 400 naming the field otherwise."""
    if kind == "approval":
        unknown = sorted(set(body) - {"approve", "reason"})
        if unknown:
            raise invalid(f"unknown field {unknown[0]!r} for an approval; send approve and optionally reason",
                          unknown[0])
        if not isinstance(body.get("approve"), bool):
            raise invalid("approve is required and must be true or false", "approve")
        reason = body.get("reason")
        if reason is not None and (not isinstance(reason, str) or len(reason) > MAX_REASON_CHARS):
            raise invalid(f"reason must be a string of at most {MAX_REASON_CHARS} characters", "reason")
        return {"approve": body["approve"], **({"reason": reason} if reason else {})}
    unknown = sorted(set(body) - {"output"})
    if unknown:
        raise invalid(f"unknown field {unknown[0]!r} for a client tool; send output", unknown[0])
    if "output" not in body:
        raise invalid("output is required: the client tool's result (any JSON value)", "output")
    return {"output": body["output"]}


async def list_pending(request: web.Request) -> web.Response:
    """The session's calls that wait for a decision.
    ---
    summary: Pending calls
    description: |
      Tool calls of the session's paused turn that wait for a person's approval (`kind: approval`)
      or for the client's output (`kind: client_tool`); an empty list when none wait.
    tags: [approvals]
    parameters:
      - {in: path, name: session_id, required: true, schema: {$ref: "#/components/schemas/Id"}}
      - {in: query, name: tenant_id, required: false, schema: {$ref: "#/components/schemas/Id"}}
    responses:
      "200":
        description: The waiting calls.
        content:
          application/json:
            schema: {$ref: "#/components/schemas/PendingCalls"}
      "400": {$ref: "#/components/responses/BadRequest"}
    """
    tenant_id, session_id = _session(request)
    paused = await request.app[PENDING].get(tenant_id, session_id)
    return web.json_response({"session_id": session_id, "pending": pending_view(paused)})


async def decide(request: web.Request) -> web.Response:
    """Decide one waiting call.
    ---
    summary: Decide a pending call
    description: |
      `{"approve": true|false, "reason"?: str}` for an approval, `{"output": <JSON>}` for a client
      tool. An approved call runs exactly once; a rejected one is not run and the model reads that
      it was declined, with the reason. When the last waiting call of the step is decided, a
      continuation turn starts: its id is `turn_id` (else null); follow it with
      `GET /api/v1/sessions/{session_id}/turns/{turn_id}/events`.
    tags: [approvals]
    parameters:
      - {in: path, name: session_id, required: true, schema: {$ref: "#/components/schemas/Id"}}
      - {in: path, name: call_id, required: true, schema: {type: string, maxLength: 256}}
      - {in: query, name: tenant_id, required: false, schema: {$ref: "#/components/schemas/Id"}}
    requestBody:
      required: true
      content:
        application/json:
          schema: {$ref: "#/components/schemas/PendingDecision"}
          example: {approve: false, reason: "The customer asked to keep the order."}
    responses:
      "202":
        description: The decision is recorded.
        content:
          application/json:
            schema: {$ref: "#/components/schemas/PendingDecided"}
            example: {call_id: call_1, remaining: 0, turn_id: 0d2f9c1e5b7a4e11}
      "400": {$ref: "#/components/responses/BadRequest"}
      "404": {description: "pending_not_found: no such waiting call (or it was settled or expired).",
              content: {application/json: {schema: {$ref: "#/components/schemas/Error"}}}}
      "409": {description: "already_decided: the call has a decision already.",
              content: {application/json: {schema: {$ref: "#/components/schemas/Error"}}}}
    """
    tenant_id, session_id = _session(request)
    call_id = request.match_info["call_id"]
    if not 0 < len(call_id) <= MAX_CALL_ID_CHARS:
        raise invalid(f"call_id must be 1 to {MAX_CALL_ID_CHARS} characters", "call_id")
    body = await json_object(request)
    remaining, record = await apply_decision(request.app, tenant_id, session_id, call_id, body,
                                             counted=request.get(TENANT_COUNTED, False), role=caller_role(request))
    turn_id = record.turn_id if record is not None else None
    return web.json_response({"call_id": call_id, "remaining": remaining, "turn_id": turn_id}, status=202)


async def apply_decision(app: web.Application, tenant_id: str, session_id: str, call_id: str,
                         body: dict[str, Any], *, counted: bool = False, stream: bool = True,
                         role: str | None = None) -> tuple[int, TurnRecord | None]:
    """Record one decision (``body`` as the REST route takes it); (calls still waiting, the
    continuation turn when this was the step's last decision). Raises ApiError (404
    pending_not_found, 409 already_decided, 400 for a body that does not fit the call's kind).
    Every front door decides through here (REST, AG-UI resume, AI SDK approval responses, A2A),
    with the caller's ``role`` (None under AUTH_MODE=none): APPROVAL_BY says who may approve."""
    store = app[PENDING]
    paused = await store.get(tenant_id, session_id)
    kind = paused.kind_of(call_id) if paused is not None else None
    if paused is None or kind is None:
        if await store.decided(tenant_id, session_id, call_id):  # its step was settled since
            raise _already(call_id)
        raise _not_found(call_id)
    if paused.expires_at <= time.time():
        await app[RUNNER].waiting.close(tenant_id, session_id, paused.turn_id, "expired")
        raise _not_found(call_id, "The call waited past PENDING_TIMEOUT_SECONDS and was settled as expired.")
    if kind == "approval" and role is not None and not allows(role, approver_role(app[SETTINGS])):
        raise forbidden(approver_role(app[SETTINGS]), role)  # APPROVAL_BY=operator: not the customer's call
    if call_id in paused.decisions:
        raise _already(call_id)
    decision = {**decision_of(kind, body), "decided_at": time.time()}
    try:
        remaining = await store.decide(tenant_id, session_id, call_id, decision)
    except PendingNotFound:
        raise _not_found(call_id) from None
    except AlreadyDecided:
        raise _already(call_id) from None
    if remaining:
        return remaining, None
    # This decision was the step's last: exactly one decider gets here.
    tools = tuple(ClientTool(t["name"], t["description"], t["parameters"]) for t in paused.tools)
    record = await start_turn(app, tenant_id, session_id, "", stream=stream, resumes=paused.turn_id, tools=tools,
                              counted=counted)
    return 0, record


def _already(call_id: str) -> ApiError:
    return ApiError(409, "already_decided", "This call has a decision already.", call_id=call_id)
