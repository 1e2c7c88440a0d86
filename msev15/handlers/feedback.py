"""Answer feedback: rate a completed turn, list a tenant's ratings.

A rating is accepted for a completed turn of the caller's tenant and session, while its stream is
retained (the turn log) or later (the store's index of completed turns, kept with the session).
The same caller rating the same turn again replaces the earlier rating (200 instead of 201).
Under AUTH_MODE=none every caller is ``anonymous`` and the tenant is the request's ``tenant_id``.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

from aiohttp import web

from msev15.events.metrics import METRICS
from msev15.events.turnlog import TURNS
from msev15.events.types import TurnCompleted
from msev15.handlers.auth import PRINCIPAL
from msev15.handlers.errors import ApiError, iso
from msev15.handlers.jsonbody import json_response
from msev15.handlers.tenancy import request_tenant
from msev15.handlers.validation import check_id, int_param, invalid, json_object
from msev15.logs import service as logs
from msev15.store.base import SESSIONS
from msev15.store.feedback import FEEDBACK, MAX_COMMENT_CHARS, CompletedTurn, Feedback, Rating

ANONYMOUS = "anonymous"
_FIELDS = frozenset({"rating", "comment"})  # the tenant comes from the credential or ?tenant_id=


def _not_found(turn_id: str) -> ApiError:
    # The same answer for an unknown turn, a failed one and another tenant's: nothing leaks.
    return ApiError(404, "turn_not_found", f"No completed turn {turn_id!r} in this session for this tenant.",
                    turn_id=turn_id)


def _rating(raw: object, field: str = "rating") -> Rating:
    if raw == "up" or raw == "down":
        return raw
    raise invalid(f"{field} must be \"up\" or \"down\"", field)


def _comment(raw: object) -> str | None:
    if raw is None:
        return None
    if not isinstance(raw, str):
        raise invalid("comment must be a string", "comment")
    if len(raw) > MAX_COMMENT_CHARS:
        raise invalid(f"comment must be at most {MAX_COMMENT_CHARS} characters, got {len(raw)}", "comment")
    return raw


async def _completed(request: web.Request, tenant_id: str, session_id: str, turn_id: str) -> bool:
    """Is this a completed turn of the tenant's (still existing) session? The turn log while it
    keeps the turn, the store's index after (and for turns of other instances the index holds)."""
    if await request.app[SESSIONS].get(tenant_id, session_id) is None:  # deleted, or expired
        return False
    store = request.app[FEEDBACK]
    record = await request.app[TURNS].find(tenant_id, session_id, turn_id)
    if record is not None:
        if not isinstance(record.terminal, TurnCompleted):
            return False
        await store.remember([CompletedTurn(tenant_id, session_id, turn_id, time.time())])  # before the subscriber
        return True
    return await store.known(tenant_id, session_id, turn_id)


def _wire(item: Feedback) -> dict[str, Any]:
    return {"session_id": item.session_id, "turn_id": item.turn_id, "rating": item.rating,
            "comment": item.comment, "caller": item.caller, "created_at": iso(item.created_at)}


async def rate_turn(request: web.Request) -> web.Response:
    """Rate an answer.
    ---
    summary: Rate a turn's answer
    description: |
      A thumbs up or down, with an optional comment, on a completed turn of this session. It is
      kept with the session, so it can be given after the turn's stream is no longer retained.
      Rating the same turn again (the same caller: the API key or token subject; anyone under
      `AUTH_MODE=none`) replaces the earlier rating and answers 200.
    tags: [feedback]
    parameters:
      - {in: path, name: session_id, required: true, schema: {$ref: "#/components/schemas/Id"}}
      - {in: path, name: turn_id, required: true, schema: {$ref: "#/components/schemas/Id"}}
      - {in: query, name: tenant_id, required: false, schema: {$ref: "#/components/schemas/Id"}}
    requestBody:
      required: true
      content:
        application/json:
          schema: {$ref: "#/components/schemas/FeedbackRequest"}
    responses:
      "201":
        description: Rated.
        content:
          application/json:
            schema: {$ref: "#/components/schemas/FeedbackItem"}
      "200":
        description: The caller's earlier rating of this turn was replaced.
        content:
          application/json:
            schema: {$ref: "#/components/schemas/FeedbackItem"}
      "400": {$ref: "#/components/responses/BadRequest"}
      "404": {$ref: "#/components/responses/TurnNotFound"}
    """
    session_id = check_id(request.match_info["session_id"], "session_id")
    turn_id = check_id(request.match_info["turn_id"], "turn_id")
    tenant_id = request_tenant(request)  # a credential of another tenant: 403 before anything else
    body = await json_object(request)
    logs.bind(session_id=session_id)
    unknown = sorted(set(body) - _FIELDS)
    if unknown:
        raise invalid(f"unknown field {unknown[0]!r}; send rating and, optionally, comment", unknown[0])
    rating = _rating(body.get("rating"))
    comment = _comment(body.get("comment"))
    if not await _completed(request, tenant_id, session_id, turn_id):
        raise _not_found(turn_id)
    principal = request.get(PRINCIPAL)
    item = Feedback(tenant_id, session_id, turn_id, principal.subject if principal else ANONYMOUS, rating, comment,
                    time.time())
    replaced = await request.app[FEEDBACK].rate(item)
    request.app[METRICS].feedback.inc((rating,))
    return json_response(_wire(item), status=200 if replaced else 201)


def _since(raw: str | None) -> float | None:
    if raw is None:
        return None
    try:
        parsed = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise invalid("since must be an ISO 8601 time, e.g. 2026-02-19T10:30:00Z", "since") from None
    if parsed.tzinfo is None:
        raise invalid("since must name its time zone (e.g. a trailing Z for UTC)", "since")
    return parsed.timestamp()


async def list_feedback(request: web.Request) -> web.Response:
    """A tenant's answer ratings, newest first.
    ---
    summary: List feedback
    description: |
      The ratings given in this tenant, newest first, optionally only `up` or `down` and only
      since a time. Under `AUTH_MODE=none` the tenant is `?tenant_id=`; with credentials, the
      credential's.
    tags: [feedback]
    parameters:
      - {in: query, name: tenant_id, required: false, schema: {$ref: "#/components/schemas/Id"}}
      - {in: query, name: rating, required: false, schema: {type: string, enum: [up, down]}}
      - {in: query, name: since, required: false, schema: {type: string, format: date-time}}
      - {in: query, name: limit, required: false, schema: {type: integer, minimum: 1, maximum: 500, default: 50}}
    responses:
      "200":
        description: The ratings.
        content:
          application/json:
            schema: {$ref: "#/components/schemas/FeedbackList"}
      "400": {$ref: "#/components/responses/BadRequest"}
    """
    tenant_id = request_tenant(request)
    # Operators and admins only: the route table (handlers/route_roles.py) refuses a customer key (403).
    query = request.query
    rating = _rating(query["rating"]) if "rating" in query else None
    since = _since(query.get("since"))
    limit = int_param(query, "limit", 50, 1, 500)
    items = await request.app[FEEDBACK].list(tenant_id, rating=rating, since=since, limit=limit)
    return json_response({"tenant_id": tenant_id, "feedback": [_wire(i) for i in items]})


def setup_routes(app: web.Application) -> None:
    app.router.add_post("/api/v1/sessions/{session_id}/turns/{turn_id}/feedback", rate_turn)
    app.router.add_get("/api/v1/feedback", list_feedback)
