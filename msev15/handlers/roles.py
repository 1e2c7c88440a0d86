"""Role checks a handler makes itself: :func:`require_role` (and, for the decision routes of
pending tool calls, :func:`require_approver`, which follows APPROVAL_BY).

The route-level check (every /api/ route's lowest role) is the auth middleware's, from the table
in msev15.handlers.route_roles. Under ``AUTH_MODE=none`` there is no principal and both are open.
"""

from __future__ import annotations

from aiohttp import web

from msev15.common.roles import DEFAULT_ROLE, allows
from msev15.config import SETTINGS, Settings
from msev15.handlers.auth import PRINCIPAL
from msev15.handlers.route_roles import OPERATOR, forbidden


def caller_role(request: web.Request) -> str | None:
    """The caller's role; None under AUTH_MODE=none (no credential: every route is open)."""
    principal = request.get(PRINCIPAL)
    return None if principal is None else principal.role


def require_role(request: web.Request, role: str) -> None:
    """403 ``forbidden`` naming ``role`` unless the caller has it (or a higher one); a no-op under
    AUTH_MODE=none."""
    have = caller_role(request)
    if have is not None and not allows(have, role):
        raise forbidden(role, have)


def approver_role(settings: Settings) -> str:
    """The role that decides pending tool-call approvals: APPROVAL_BY=anyone → customer (anyone of
    the tenant), APPROVAL_BY=operator → operator (or admin)."""
    return OPERATOR if settings.approval_by == "operator" else DEFAULT_ROLE


def require_approver(request: web.Request) -> None:
    """For the approval decision routes: 403 unless the caller may decide under APPROVAL_BY."""
    require_role(request, approver_role(request.app[SETTINGS]))
