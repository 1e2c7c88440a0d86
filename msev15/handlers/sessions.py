"""Session history, listing and deletion, always within the caller's tenant."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from msev15.handlers.errors import ApiError, iso
from msev15.handlers.jsonbody import json_response
from msev15.handlers.validation import check_id, int_param, tenant_from_query
from msev15.logs import service as logs
from msev15.store.base import SESSIONS
from msev15.store.cascade import forget_session
from msev15.store.sessions import Message


def _not_found(session_id: str) -> ApiError:
    # The same answer whether the session is missing or belongs to another tenant: no leak.
    return ApiError(404, "Session not found", f"No session {session_id!r} exists for this tenant.",
                    session_id=session_id)


def _shown(message: Message) -> dict[str, Any]:
    shown: dict[str, Any] = {"role": message.role, "content": message.content, "timestamp": iso(message.ts)}
    author = message.author
    if author is not None:  # a person (an operator) wrote it
        shown["author"] = author
    return shown


def _target(request: web.Request) -> tuple[str, str]:
    session_id = check_id(request.match_info["session_id"], "session_id")
    tenant_id = tenant_from_query(request)
    logs.bind(session_id=session_id, tenant_id=tenant_id)
    return tenant_id, session_id


async def history(request: web.Request) -> web.Response:
    """A session's conversation.
    ---
    summary: Get conversation history
    description: >
      The user and assistant messages of the session, oldest first. Tool calls and their
      results are kept server-side as context for the model but are not listed here.
    tags: [sessions]
    parameters:
      - {in: path, name: session_id, required: true, schema: {$ref: "#/components/schemas/Id"}}
      - {in: query, name: tenant_id, required: false, schema: {$ref: "#/components/schemas/Id"}}
    responses:
      "200":
        description: The history.
        content:
          application/json:
            schema: {$ref: "#/components/schemas/History"}
      "404": {$ref: "#/components/responses/SessionNotFound"}
    """
    tenant_id, session_id = _target(request)
    session = await request.app[SESSIONS].get(tenant_id, session_id)
    if session is None:
        raise _not_found(session_id)
    return json_response({
        "session_id": session_id,
        "tenant_id": tenant_id,
        "message_count": session.visible_count,
        "created_at": iso(session.created_at),
        "last_activity": iso(session.last_activity),
        "mode": session.mode,
        "messages": [_shown(m) for m in session.messages if m.visible],
    })


async def delete_session(request: web.Request) -> web.Response:
    """Delete a session.
    ---
    summary: Delete a session
    tags: [sessions]
    parameters:
      - {in: path, name: session_id, required: true, schema: {$ref: "#/components/schemas/Id"}}
      - {in: query, name: tenant_id, required: false, schema: {$ref: "#/components/schemas/Id"}}
    responses:
      "200":
        description: Deleted.
        content:
          application/json:
            schema: {$ref: "#/components/schemas/Deleted"}
            example: {message: Session deleted successfully, session_id: abc-123-def, messages_deleted: 6}
      "404": {$ref: "#/components/responses/SessionNotFound"}
    """
    tenant_id, session_id = _target(request)
    deleted = await request.app[SESSIONS].delete(tenant_id, session_id)
    if deleted is None:
        raise _not_found(session_id)
    await forget_session(request.app, tenant_id, session_id)
    return json_response({"message": "Session deleted successfully", "session_id": session_id,
                              "messages_deleted": deleted})


async def list_sessions(request: web.Request) -> web.Response:
    """A tenant's sessions, most recently active first.
    ---
    summary: List sessions
    tags: [sessions]
    parameters:
      - {in: query, name: tenant_id, required: false, schema: {$ref: "#/components/schemas/Id"}}
      - {in: query, name: limit, required: false, schema: {type: integer, minimum: 1, maximum: 200, default: 50}}
      - {in: query, name: offset, required: false, schema: {type: integer, minimum: 0, maximum: 1000000000, default: 0}}
    responses:
      "200":
        description: One page of sessions.
        content:
          application/json:
            schema: {$ref: "#/components/schemas/SessionList"}
    """
    tenant_id = tenant_from_query(request)
    limit = int_param(request.query, "limit", 50, 1, 200)
    offset = int_param(request.query, "offset", 0, 0, 10**9)
    page = await request.app[SESSIONS].page(tenant_id, limit, offset)
    return json_response({
        "tenant_id": tenant_id,
        "total": page.total,
        "limit": limit,
        "offset": offset,
        "sessions": [{"session_id": s.session_id, "message_count": s.visible_count,
                      "created_at": iso(s.created_at), "last_activity": iso(s.last_activity), "mode": s.mode}
                     for s in page.sessions],
    })
