"""Every route under /api/ × every credential case, read from the app's own router: a route added
later is in this matrix without an edit here (give it a request builder in ``BUILDERS`` when
the generic one does not fit).

Cases, for AUTH_MODE=api_key and AUTH_MODE=jwt: no credential, garbage, a malformed scheme,
revoked (api_key) or expired (jwt) → 401 ``unauthorized`` with ``WWW-Authenticate: Bearer``;
another tenant's credential → it acts in its own tenant and sees nothing of acme's; the caller's
credential with another ``tenant_id`` → 403 ``tenant_mismatch``; with its own ``tenant_id`` or
none → served. The credentials are admins' (every route is theirs): which role may use which
route is tests/security/test_route_roles.py's matrix.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from msev15.app import create_app
from msev15.config import Settings
from tests.conftest import assert_envelope, make_settings
from tests.security.authkit import (
    AUDIENCE,
    ISSUER,
    Jwks,
    SigningKey,
    create_keys,
    revoke_key,
)

SECRET = "acme-private-note-7f3a"
SESSION = "s-acme"


def _api_routes() -> list[tuple[str, str]]:
    """(method, path template) of every route under /api/, from a freshly built app."""

    async def build() -> list[tuple[str, str]]:
        app = await create_app(Settings.defaults(llm_provider="offline", mcp_server_url="", log_to_file=False))
        found = []
        for route in app.router.routes():
            info = route.resource.get_info() if route.resource is not None else {}
            path = info.get("path") or info.get("formatter") or ""
            if path.startswith("/api/") and route.method not in ("HEAD", "OPTIONS", "*"):
                found.append((route.method, path))
        return sorted(set(found))

    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(build())
    finally:
        loop.close()


ROUTES = _api_routes()


@dataclass
class Target:
    """What a route is asked about: acme's session and turn."""

    session_id: str
    turn_id: str


Builder = Callable[[Target, str | None], dict[str, Any]]


def _chat_body(target: Target, tenant: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {"session_id": target.session_id, "message": "Hello there"}
    if tenant is not None:
        body["tenant_id"] = tenant
    return {"json": body}


def _query(target: Target, tenant: str | None) -> dict[str, Any]:
    return {"params": {"tenant_id": tenant}} if tenant is not None else {}


def _agui_body(target: Target, tenant: str | None) -> dict[str, Any]:
    body = {"threadId": target.session_id, "runId": "run-1", "state": {}, "tools": [], "context": [],
            "forwardedProps": {}, "messages": [{"id": "m1", "role": "user", "content": "Hello there"}]}
    return {"json": body, "headers": {"X-Tenant-ID": tenant} if tenant is not None else {}}


def _aisdk_body(target: Target, tenant: str | None) -> dict[str, Any]:
    body = {"id": target.session_id, "trigger": "submit-message", "messageId": "m1",
            "messages": [{"id": "m1", "role": "user", "parts": [{"type": "text", "text": "Hello there"}]}]}
    return {"json": body, "headers": {"X-Tenant-ID": tenant} if tenant is not None else {}}


def _aisdk_resume(target: Target, tenant: str | None) -> dict[str, Any]:
    return {"headers": {"X-Tenant-ID": tenant} if tenant is not None else {}}


# Per-route request builders; routes not listed get the generic one (a JSON body for POST, and
# the tenant in the query, which every handler reads through request_tenant()).
BUILDERS: dict[tuple[str, str], Builder] = {
    ("POST", "/api/v1/chat"): _chat_body,
    ("POST", "/api/v1/chat/stream"): _chat_body,
    ("POST", "/api/v1/ag-ui"): _agui_body,
    ("POST", "/api/v1/ai-sdk/chat"): _aisdk_body,
    ("GET", "/api/v1/ai-sdk/chat/{id}/stream"): _aisdk_resume,
}


def _generic(method: str) -> Builder:
    def build(target: Target, tenant: str | None) -> dict[str, Any]:
        kwargs = _query(target, tenant)
        if method == "POST":
            kwargs["json"] = {}
        return kwargs

    return build


def _url(path: str, target: Target) -> str:
    values = {"session_id": target.session_id, "turn_id": target.turn_id, "id": target.session_id}
    return re.sub(r"\{(\w+)\}", lambda m: values.get(m.group(1), "x1"), path)


@dataclass
class World:
    client: TestClient
    target: Target
    good: dict[str, str]  # headers of acme's credential
    other: dict[str, str]  # headers of globex's credential
    dead: dict[str, str]  # revoked (api_key) or expired (jwt) credential of acme


async def _seed(client: TestClient, headers: dict[str, str]) -> Target:
    resp = await client.post("/api/v1/chat", json={"session_id": SESSION, "message": SECRET}, headers=headers)
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert body["tenant_id"] == "acme"
    return Target(SESSION, body["turn_id"])


@pytest.fixture(params=["api_key", "jwt"])
async def world(request: pytest.FixtureRequest, aiohttp_client: Any, tmp_path: Path) -> AsyncIterator[World]:
    mode = request.param
    if mode == "api_key":
        db = tmp_path / "keys.db"
        made = await create_keys(db, "acme", "globex", "acme", role="admin")
        made_dead = await create_keys(db, "acme", role="admin")
        await revoke_key(db, made_dead["acme"][0])
        settings = make_settings(tmp_path, auth_mode="api_key", api_keys_db_path=str(db), api_keys_cache_seconds=0)
        client = await aiohttp_client(await create_app(settings))
        good = {"Authorization": f"Bearer {made['acme'][1]}"}
        world = World(client, await _seed(client, good), good, {"X-API-Key": made["globex"][1]},
                      {"Authorization": f"Bearer {made_dead['acme'][1]}"})
        yield world
        return
    key = SigningKey("k1")
    async with Jwks(key).serving() as jwks:
        settings = make_settings(tmp_path, auth_mode="jwt", jwt_jwks_url=jwks.url, jwt_issuer=ISSUER,
                                 jwt_audience=AUDIENCE)
        client = await aiohttp_client(await create_app(settings))
        good = {"Authorization": f"Bearer {key.token('acme', roles=['admin'])}"}
        yield World(client, await _seed(client, good), good,
                    {"Authorization": f"Bearer {key.token('globex', roles='admin')}"},
                    {"Authorization": f"Bearer {key.token('acme', exp_in=-120, roles=['admin'])}"})


async def _call(world: World, method: str, path: str, headers: dict[str, str], tenant: str | None) -> Any:
    build = BUILDERS.get((method, path), _generic(method))
    kwargs = build(world.target, tenant)
    merged = {**kwargs.pop("headers", {}), **headers}
    resp = await world.client.request(method, _url(path, world.target), headers=merged, **kwargs)
    return resp, await body_text(resp)


async def body_text(resp: Any) -> str:
    """The body; for a stream that stays open (the session stream), its first line only."""
    if resp.status == 200 and resp.headers.get("Content-Type", "").startswith("text/event-stream") \
            and resp.headers.get("X-Turn-ID") is None:
        first = await resp.content.readline()
        resp.close()
        return str(first.decode())
    return str(await resp.text())


async def _assert_unauthorized(resp: Any, text: str) -> None:
    assert resp.status == 401, text
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    assert_envelope(await resp.json(), "unauthorized")


@pytest.mark.parametrize(("method", "path"), ROUTES, ids=[f"{m} {p}" for m, p in ROUTES])
async def test_every_api_route_checks_the_credential_and_its_tenant(world: World, method: str, path: str) -> None:
    refused = {
        "no credential": {},
        "garbage bearer": {"Authorization": "Bearer garbage"},
        "garbage key": {"X-API-Key": "msev15_0000000000000000_" + "A" * 43},
        "wrong scheme": {"Authorization": "Basic YWxhZGRpbjpvcGVuc2VzYW1l"},
        "empty bearer": {"Authorization": "Bearer "},
        "revoked or expired": world.dead,
    }
    for case, headers in refused.items():
        resp, text = await _call(world, method, path, headers, None)
        assert resp.status == 401, f"{case}: {resp.status} {text}"
        await _assert_unauthorized(resp, text)

    # acme's credential naming another tenant: refused, whatever the route.
    resp, text = await _call(world, method, path, world.good, "globex")
    assert resp.status == 403, text
    assert_envelope(await resp.json(), "tenant_mismatch")

    # globex's credential on acme's session/turn: acts in globex, never sees acme's data.
    resp, text = await _call(world, method, path, world.other, None)
    assert resp.status not in (401, 403, 500), text
    assert SECRET not in text
    resp, text = await _call(world, method, path, world.other, "acme")
    assert resp.status == 403, text

    # acme's own credential, with its own tenant named or not: served (2xx, or a 4xx of the route's own).
    for tenant in (None, "acme"):
        resp, text = await _call(world, method, path, world.good, tenant)
        assert resp.status not in (401, 403, 500), f"tenant {tenant}: {resp.status} {text}"


def test_the_matrix_covers_the_routes_the_issue_names() -> None:
    paths = {p for _, p in ROUTES}
    for needed in ("/api/v1/chat", "/api/v1/chat/stream", "/api/v1/sessions", "/api/v1/sessions/{session_id}/history",
                   "/api/v1/sessions/{session_id}", "/api/v1/sessions/{session_id}/cancel",
                   "/api/v1/sessions/{session_id}/turns/{turn_id}",
                   "/api/v1/sessions/{session_id}/turns/{turn_id}/events",
                   "/api/v1/sessions/{session_id}/turns/{turn_id}/cancel"):
        assert needed in paths
