"""The tenant's agent profile (issue 25): read, write, list and roll back its versions.

Admins of the tenant only (handlers/route_roles.py); the tenant is the credential's, or under
``AUTH_MODE=none`` the query's ``tenant_id`` (default ``default``). The store validates and
versions (store/profiles.py); here: HTTP. Inline header values are secrets: every response shows
them as ``***`` and nothing here logs a value. A change is logged with the tenant, the version,
who made it and which top-level fields changed.

``If-Match`` makes a PUT conditional: ``"3"`` (or weak ``W/"3"``: versions are exact either way)
writes only while version 3 is current, ``"0"`` only while none is, ``*`` only while one is; a
list matches any of its versions. A stale one is 412 ``version_conflict``. DELETE and rollback are
not conditional and refuse ``If-Match`` (400) rather than ignore it. ``If-None-Match`` on GET
answers 304 while the version it names is current.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from aiohttp import web

from msev15.handlers.auth import PRINCIPAL
from msev15.handlers.errors import ApiError, iso
from msev15.handlers.jsonbody import json_response
from msev15.handlers.tenancy import request_tenant
from msev15.handlers.validation import invalid, json_object
from msev15.store.profile_model import ProfileInvalid, masked, parse_profile
from msev15.store.profiles import PROFILES, ProfileRecord, ProfileStore, VersionConflict

log = logging.getLogger("api.profiles")

PATH = "/api/v1/agent-profile"
ANONYMOUS = "anonymous"
_ETAG = re.compile(r'\s*(?:W/)?"(\d{1,18})"\s*')
_MAX_VERSION = 10**18


def _caller(request: web.Request) -> str:
    principal = request.get(PRINCIPAL)
    return (principal.name or principal.subject) if principal else ANONYMOUS


def _etag(version: int) -> dict[str, str]:
    return {"ETag": f'"{version}"'}


def _no_profile(version: int | None = None) -> ApiError:
    if version is not None:  # the tenant may well have a profile: just not that version
        return ApiError(404, "no_profile", f"This tenant's profile has no version {version}; "
                                           "GET /api/v1/agent-profile/versions lists those it has.")
    return ApiError(404, "no_profile", "This tenant has no profile; its agent uses the service's defaults.")


def _shown(record: ProfileRecord) -> dict[str, Any]:
    return {"version": record.version, "profile": masked(record.profile), "updated_at": iso(record.updated_at),
            "updated_by": record.updated_by}


def _version_param(raw: object, field: str) -> int:
    """A version number: the path's text, or the body's integer (a string there is refused)."""
    if isinstance(raw, str) and field == "n":
        raw = int(raw) if raw.isdecimal() and len(raw) <= 18 else None
    if isinstance(raw, bool) or not isinstance(raw, int) or not 1 <= raw < _MAX_VERSION:
        raise invalid(f"{field} must be a version number (an integer of at least 1)", field)
    return raw


async def _if_version(request: web.Request, store: ProfileStore, tenant_id: str) -> int | None:
    """The version a conditional PUT needs current (None: unconditional); 412 when none can match."""
    header = request.headers.get("If-Match")
    if header is None:
        return None
    if header.strip() == "*":
        current = await store.current_version(tenant_id)
        if current == 0:
            raise VersionConflict(0)
        return current
    wanted: set[int] = set()
    for part in header.split(","):
        match = _ETAG.fullmatch(part)
        if match is None:
            raise invalid('If-Match must be a quoted version, e.g. "3" (or W/"3", a list of them, or *)', "If-Match")
        wanted.add(int(match[1]))
    if len(wanted) == 1:
        return wanted.pop()
    current = await store.current_version(tenant_id)
    if current not in wanted:
        raise VersionConflict(current)
    return current


def _matches(header: str | None, version: int) -> bool:
    """Does an If-None-Match header name ``version`` (weakly compared, ``*`` matches any)?"""
    if header is None:
        return False
    if header.strip() == "*":
        return True
    return any((m := _ETAG.fullmatch(part)) is not None and int(m[1]) == version for part in header.split(","))


def _unconditional(request: web.Request) -> None:
    """DELETE and rollback are not conditional: refuse If-Match rather than ignore it."""
    if "If-Match" in request.headers:
        raise invalid("If-Match is supported on PUT only; read the version, then DELETE or roll back", "If-Match")


def _changed(before: dict[str, Any] | None, after: dict[str, Any]) -> list[str]:
    """Top-level fields whose value differs: names only, never values."""
    before = before or {}
    return sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))


async def _written(store: ProfileStore, tenant_id: str, n: int, by: str, what: str) -> web.Response:
    record, previous = await store.version(tenant_id, n), await store.version(tenant_id, n - 1)
    fields = _changed(previous.profile if previous else None, record.profile if record else {})
    log.info("agent profile %s: tenant=%s version=%d by=%s fields=%s", what, tenant_id, n, by,
             ",".join(fields) or "-")
    return json_response({"version": n}, headers=_etag(n))


async def get_profile(request: web.Request) -> web.Response:
    """The tenant's current agent profile.
    ---
    summary: Get the agent profile
    description: |
      The profile the tenant's turns use now, its version (also the `ETag`), when and by whom it
      was written. Inline MCP header values are shown as `***`; `env:` references as written.
    tags: [profiles]
    parameters:
      - {in: query, name: tenant_id, required: false, schema: {$ref: "#/components/schemas/Id"}}
      - {in: header, name: If-None-Match, required: false, schema: {type: string, example: '"3"'}}
    responses:
      "200":
        description: The current profile.
        headers: {ETag: {schema: {type: string, example: '"3"'}}}
        content: {application/json: {schema: {$ref: "#/components/schemas/ProfileRecord"}}}
      "304": {description: 'If-None-Match names the current version: unchanged.'}
      "404": {$ref: "#/components/responses/NoProfile"}
    """
    tenant_id = request_tenant(request)
    record = await request.app[PROFILES].current(tenant_id)
    if record is None:
        raise _no_profile()
    if _matches(request.headers.get("If-None-Match"), record.version):
        return web.Response(status=304, headers=_etag(record.version))
    return json_response(_shown(record), headers=_etag(record.version))


async def put_profile(request: web.Request) -> web.Response:
    """Write the tenant's agent profile.
    ---
    summary: Set the agent profile
    description: |
      Stores the body as the next version (1, 2, 3, … per tenant) and makes it current: turns that
      start after this returns use it, on every instance. `If-Match: "<version>"` makes it
      conditional (stale: 412). An invalid profile is 400 with every problem listed.
    tags: [profiles]
    parameters:
      - {in: query, name: tenant_id, required: false, schema: {$ref: "#/components/schemas/Id"}}
      - {in: header, name: If-Match, required: false, schema: {type: string, example: '"3"',
         pattern: '^ *([*]|(W/)?"[0-9]{1,18}"( *, *(W/)?"[0-9]{1,18}")*) *$'}}
    requestBody:
      required: true
      content: {application/json: {schema: {$ref: "#/components/schemas/AgentProfile"}}}
    responses:
      "200":
        description: Written.
        headers: {ETag: {schema: {type: string, example: '"4"'}}}
        content: {application/json: {schema: {$ref: "#/components/schemas/ProfileVersion"}}}
      "400": {$ref: "#/components/responses/ProfileInvalid"}
      "412": {$ref: "#/components/responses/VersionConflict"}
    """
    tenant_id = request_tenant(request)
    store = request.app[PROFILES]
    body = await json_object(request)
    by = _caller(request)
    try:
        parse_profile(body)  # an invalid profile is 400 whatever If-Match says (the store checks it again)
        n = await store.put(tenant_id, body, by, if_version=await _if_version(request, store, tenant_id))
    except VersionConflict as exc:
        raise version_conflict(exc) from None
    except ProfileInvalid as exc:
        raise ApiError(400, "validation_error", f"The profile is invalid ({len(exc.problems)} problem"
                       f"{'s' if len(exc.problems) != 1 else ''}).", problems=exc.problems) from None
    return await _written(store, tenant_id, n, by, "written")


async def delete_profile(request: web.Request) -> web.Response:
    """Go back to the service's defaults.
    ---
    summary: Delete the agent profile
    description: |
      No profile is current any more: the tenant's next turns use the service's settings (version 0).
      The history is kept (a rollback can restore a version). Idempotent. Not conditional:
      If-Match is refused (400).
    tags: [profiles]
    parameters:
      - {in: query, name: tenant_id, required: false, schema: {$ref: "#/components/schemas/Id"}}
    responses:
      "204": {description: The defaults apply.}
    """
    tenant_id = request_tenant(request)
    _unconditional(request)
    store = request.app[PROFILES]
    by = _caller(request)
    before = await store.current_version(tenant_id)
    if await store.delete(tenant_id, by):
        log.info("agent profile deleted: tenant=%s version=%d by=%s (defaults apply)", tenant_id, before, by)
    return web.Response(status=204)


async def list_versions(request: web.Request) -> web.Response:
    """The tenant's profile versions, newest first.
    ---
    summary: List profile versions
    tags: [profiles]
    parameters:
      - {in: query, name: tenant_id, required: false, schema: {$ref: "#/components/schemas/Id"}}
    responses:
      "200":
        description: The kept versions (the newest 50), newest first; empty when there never was a profile.
        content: {application/json: {schema: {$ref: "#/components/schemas/ProfileVersions"}}}
    """
    tenant_id = request_tenant(request)
    records = await request.app[PROFILES].versions(tenant_id)
    return json_response({"versions": [{"version": r.version, "updated_at": iso(r.updated_at),
                                        "updated_by": r.updated_by} for r in records]})


async def get_version(request: web.Request) -> web.Response:
    """One version of the tenant's profile.
    ---
    summary: Get a profile version
    tags: [profiles]
    parameters:
      - {in: path, name: n, required: true, schema: {type: integer, minimum: 1, maximum: 999999999999999999}}
      - {in: query, name: tenant_id, required: false, schema: {$ref: "#/components/schemas/Id"}}
    responses:
      "200":
        description: That version (inline header values as `***`).
        content: {application/json: {schema: {$ref: "#/components/schemas/ProfileRecord"}}}
      "400": {$ref: "#/components/responses/BadRequest"}
      "404": {$ref: "#/components/responses/NoProfile"}
    """
    tenant_id = request_tenant(request)  # a credential of another tenant: 403 before anything else
    n = _version_param(request.match_info["n"], "n")
    record = await request.app[PROFILES].version(tenant_id, n)
    if record is None:
        raise _no_profile(n)
    return json_response(_shown(record))


async def rollback(request: web.Request) -> web.Response:
    """Make an earlier version current again, as a new version.
    ---
    summary: Roll the profile back
    tags: [profiles]
    parameters:
      - {in: query, name: tenant_id, required: false, schema: {$ref: "#/components/schemas/Id"}}
    requestBody:
      required: true
      content: {application/json: {schema: {$ref: "#/components/schemas/ProfileRollback"}}}
    responses:
      "200":
        description: The new version, equal to the one named.
        headers: {ETag: {schema: {type: string, example: '"5"'}}}
        content: {application/json: {schema: {$ref: "#/components/schemas/ProfileVersion"}}}
      "400": {$ref: "#/components/responses/BadRequest"}
      "404": {$ref: "#/components/responses/NoProfile"}
    """
    tenant_id = request_tenant(request)
    _unconditional(request)
    body = await json_object(request)
    unknown = sorted(set(body) - {"version"})
    if unknown:
        raise invalid(f"unknown field {unknown[0]!r}; send only version", unknown[0])
    n = _version_param(body.get("version"), "version")
    store = request.app[PROFILES]
    by = _caller(request)
    try:
        written = await store.rollback(tenant_id, n, by)
    except LookupError:
        raise _no_profile(n) from None
    return await _written(store, tenant_id, written, by, f"rolled back to version {n}")


def version_conflict(exc: VersionConflict) -> ApiError:
    return ApiError(412, "version_conflict", "The profile changed since the version named in If-Match; read it "
                    "again and retry.", current_version=exc.current,
                    headers=_etag(exc.current) if exc.current else None)


def setup_routes(app: web.Application) -> None:
    app.router.add_get(PATH, get_profile)
    app.router.add_put(PATH, put_profile)
    app.router.add_delete(PATH, delete_profile)
    app.router.add_get(PATH + "/versions", list_versions)
    app.router.add_get(PATH + "/versions/{n}", get_version)
    app.router.add_post(PATH + "/rollback", rollback)
