"""The one way a handler learns its caller's tenant: :func:`request_tenant`.

Under ``AUTH_MODE=none`` (the spec's default) the tenant is what the client claims: ``tenant_id``
in the query and/or the body (they must agree), ``"default"`` when neither names one. Under
``api_key`` or ``jwt`` it is the authenticated principal's tenant (bound by
:mod:`msev15.handlers.auth`); a claim may repeat it, but naming another tenant is a 403
``tenant_mismatch``, never a quiet switch.

:func:`tenant_rate_middleware` counts requests against RATE_LIMIT_PER_TENANT_PER_MINUTE by the
tenant known before the body is read.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from msev15.common.tenancy import DEFAULT_TENANT, TenantIdError, check_tenant
from msev15.handlers.auth import PRINCIPAL
from msev15.handlers.errors import ApiError
from msev15.handlers.ratelimit import EXEMPT_PREFIXES, TENANT_COUNTED, check_tenant_rate
from msev15.logs import service as logs


def _checked(value: object, field: str, where: str) -> str:
    if value is None:
        raise ApiError(400, "validation_error", f"{field} must be a string, not null (leave it out for the "
                       "default tenant)", field=field)
    try:
        return check_tenant(value)
    except TenantIdError as exc:  # the rule, never the value sent
        raise ApiError(400, "validation_error", exc.rule.replace("tenant_id", field, 1), field=field,
                       detail=f"in the {where}") from None


def request_tenant(request: web.Request, claimed: object | None = None, field: str = "tenant_id", *,
                   body: Mapping[str, Any] | None = None, claimed_in: str = "body") -> str:
    """The tenant this request acts for, bound for logging.

    ``claimed`` is a tenant the request named (None: it named none), in the body unless
    ``claimed_in`` says where (a header, for the protocol adapters). Pass the parsed JSON ``body``
    instead to have an explicit ``null`` refused (400) rather than read as "absent". A ``field``
    in the query string is always considered and must agree with the body's (else 400).
    """
    if body is not None and field in body:
        claimed = _checked(body[field], field, "body")
    elif claimed is not None:
        claimed = _checked(claimed, field, claimed_in)
    named: str | None = claimed
    if field in request.query:
        in_query = _checked(request.query[field], field, "query")
        if named is not None and named != in_query:
            raise ApiError(400, "validation_error", f"{field} in the query and in the body differ; send it once "
                           "or send the same value", field=field)
        named = in_query
    principal = request.get(PRINCIPAL)
    if principal is None:  # AUTH_MODE=none: the claim is the tenant
        tenant = named or DEFAULT_TENANT
    else:
        if named is not None and named != principal.tenant_id:
            raise ApiError(403, "tenant_mismatch", f"The credential belongs to another tenant than the {field} "
                           "sent; leave it out or send the credential's own tenant.", field=field)
        tenant = principal.tenant_id
    logs.bind(tenant_id=tenant)
    return tenant


def _valid(tenant_id: str | None) -> str | None:
    """A tenant id as the rule allows it, else None: a made-up one is refused by the handler (400),
    and never becomes a rate-limit key (a flood of distinct junk ids would each make one)."""
    if tenant_id is None:
        return None
    try:
        return check_tenant(tenant_id)
    except TenantIdError:
        return None


# The protocol adapters take the tenant from this header (handlers/protocols.py), before the body.
_HEADER_ROUTES = ("/api/v1/ag-ui", "/api/v1/ai-sdk/")
_TENANT_HEADER = "X-Tenant-ID"


def _named_tenant(request: web.Request) -> str | None:
    """The tenant a request names before its body (AUTH_MODE=none): the query's ``tenant_id``, else,
    on the protocol routes, which act for it, the ``X-Tenant-ID`` header. A request over its
    tenant's limit is then refused before its body is read or decoded."""
    named = request.query.get("tenant_id")
    if named is None and request.path.startswith(_HEADER_ROUTES):
        named = request.headers.get(_TENANT_HEADER)
    return named


@web.middleware
async def tenant_rate_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The tenant limit for every request whose tenant is known before its body is read: the
    credential's tenant under AUTH_MODE api_key/jwt (every /api/ request), else a ``tenant_id`` in
    the query (sessions, turns) or the X-Tenant-ID header of the protocol routes. A chat naming its
    tenant only in the body counts when its turn starts (handlers/chat.py start_turn), after the
    body is decoded: to be refused cheaply, name it in the query or send a credential."""
    if not request.path.startswith(EXEMPT_PREFIXES) and request.method != "OPTIONS":
        principal = request.get(PRINCIPAL)
        tenant_id = principal.tenant_id if principal is not None else _valid(_named_tenant(request))
        if tenant_id:
            await check_tenant_rate(request.app, tenant_id)
            request[TENANT_COUNTED] = True
    return await handler(request)
