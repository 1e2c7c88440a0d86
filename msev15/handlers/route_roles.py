"""Which role each route needs, and the 403 ``forbidden`` for a credential without it.

:data:`ROUTE_ROLES` declares, for every route under ``/api/`` (method and path template as the
router knows them), the lowest role that may use it (roles in msev15.common.roles: customer <
operator < admin). The auth middleware checks it for every request once the principal is known
(:func:`check_route_role`); a route nobody declared is refused to all but ``admin`` (fail closed),
and tests/security/test_route_roles.py builds the route × role matrix from the router, so a new
route without a line here fails the tests.

Handlers that decide by what is asked rather than by route call
:func:`msev15.handlers.roles.require_role`. Under ``AUTH_MODE=none`` there is no principal and
every route is open, as the banner warns.
"""

from __future__ import annotations

from aiohttp import web

from msev15.common.roles import ROLES, allows
from msev15.handlers.errors import ApiError

CUSTOMER, OPERATOR, ADMIN = ROLES

# (method, path template) -> the lowest role that may call it.
ROUTE_ROLES: dict[tuple[str, str], str] = {
    ("POST", "/api/v1/chat"): CUSTOMER,
    ("POST", "/api/v1/chat/stream"): CUSTOMER,
    ("GET", "/api/v1/sessions"): CUSTOMER,
    ("GET", "/api/v1/sessions/{session_id}/history"): CUSTOMER,
    ("DELETE", "/api/v1/sessions/{session_id}"): CUSTOMER,
    ("POST", "/api/v1/sessions/{session_id}/cancel"): CUSTOMER,
    ("GET", "/api/v1/sessions/{session_id}/turns/{turn_id}"): CUSTOMER,
    ("GET", "/api/v1/sessions/{session_id}/turns/{turn_id}/events"): CUSTOMER,
    ("POST", "/api/v1/sessions/{session_id}/turns/{turn_id}/cancel"): CUSTOMER,
    ("POST", "/api/v1/ag-ui"): CUSTOMER,
    ("POST", "/api/v1/ai-sdk/chat"): CUSTOMER,
    ("GET", "/api/v1/ai-sdk/chat/{id}/stream"): CUSTOMER,
    ("GET", "/api/v1/sessions/{session_id}/events"): CUSTOMER,  # the session stream
    # turns that wait: the customer sees and answers its own (APPROVAL_BY=operator narrows approvals)
    ("GET", "/api/v1/sessions/{session_id}/pending"): CUSTOMER,
    ("POST", "/api/v1/sessions/{session_id}/pending/{call_id}"): CUSTOMER,
    # answer feedback: a customer rates, operators read the tenant's ratings
    ("POST", "/api/v1/sessions/{session_id}/turns/{turn_id}/feedback"): CUSTOMER,
    ("GET", "/api/v1/feedback"): OPERATOR,
    # human handoff: operators
    ("GET", "/api/v1/handoffs"): OPERATOR,
    ("POST", "/api/v1/handoffs/{session_id}/claim"): OPERATOR,
    ("POST", "/api/v1/handoffs/{session_id}/messages"): OPERATOR,
    ("POST", "/api/v1/handoffs/{session_id}/release"): OPERATOR,
    # the tenant's agent profile: its admins
    ("GET", "/api/v1/agent-profile"): ADMIN,
    ("PUT", "/api/v1/agent-profile"): ADMIN,
    ("DELETE", "/api/v1/agent-profile"): ADMIN,
    ("GET", "/api/v1/agent-profile/versions"): ADMIN,
    ("GET", "/api/v1/agent-profile/versions/{n}"): ADMIN,
    ("POST", "/api/v1/agent-profile/rollback"): ADMIN,
}


def forbidden(needed: str, role: str) -> ApiError:
    above = ROLES[ROLES.index(needed) + 1:]
    also = f" (or {' or '.join(above)})" if above else ""
    return ApiError(403, "forbidden", f"This needs the role {needed}{also}; the credential's role is {role}.",
                    required_role=needed)


def route_role(method: str, template: str) -> str:
    """The role a route needs; ``admin`` for a route nobody declared."""
    return ROUTE_ROLES.get(("GET" if method == "HEAD" else method, template), ADMIN)


def check_route_role(request: web.Request, role: str) -> None:
    """403 ``forbidden`` unless ``role`` (the authenticated caller's) may use the matched /api/ route."""
    resource = request.match_info.route.resource
    if resource is None or not request.path.startswith("/api/"):
        return  # no route matched (the 404 follows), or not an API route
    needed = route_role(request.method, resource.canonical)
    if not allows(role, needed):
        raise forbidden(needed, role)
