"""Roles: every /api/ route × every role, read from the app's own router.

A route without a declared role (msev15/handlers/route_roles.py ROUTE_ROLES) fails
``test_every_api_route_declares_a_role``, and at run time it is refused to all but admins. A
credential below a route's role gets 403 ``forbidden`` naming the role needed; at or above it, the
route serves it. Keys of each role live in a real SQLite key store; tokens are signed with a real
key and verified against a JWKS on loopback.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from msev15.app import create_app
from msev15.common.roles import ROLES, allows
from msev15.handlers.roles import require_approver
from msev15.handlers.route_roles import ROUTE_ROLES
from msev15.store.apikeys import SqliteApiKeyStore
from tests.conftest import assert_envelope, make_settings
from tests.security.authkit import AUDIENCE, ISSUER, Jwks, SigningKey
from tests.security.test_route_auth import BUILDERS, ROUTES, Target, _generic, _url, body_text

UNDECLARED = "/api/v1/not-declared-anywhere"
APPROVE = "/api/v1/test-approval-decision"


def test_every_api_route_declares_a_role() -> None:
    missing = [route for route in ROUTES if route not in ROUTE_ROLES]
    assert not missing, f"declare a role in msev15/handlers/route_roles.py for {missing}"
    stale = [route for route in ROUTE_ROLES if route not in ROUTES]
    assert not stale, f"ROUTE_ROLES names routes the router does not have: {stale}"
    assert all(role in ROLES for role in ROUTE_ROLES.values())


async def _keys(db: Path) -> dict[str, str]:
    """role -> an acme key of that role (what ``msev15 keys create --role`` makes)."""
    store = SqliteApiKeyStore(db)
    try:
        return {role: (await store.create("acme", f"acme-{role}", role))[1] for role in ROLES}
    finally:
        await store.close()


async def _undeclared(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


async def _approval_decision(request: web.Request) -> web.Response:
    require_approver(request)
    return web.json_response({"decided": True})


async def _app(tmp_path: Path, **overrides: Any) -> web.Application:
    app = await create_app(make_settings(tmp_path, **overrides))
    app.router.add_get(UNDECLARED, _undeclared)  # as if someone forgot ROUTE_ROLES
    app.router.add_post(APPROVE, _approval_decision)
    return app


@dataclass
class World:
    client: TestClient
    keys: dict[str, str]
    target: Target


@pytest.fixture
async def world(aiohttp_client: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[World]:
    # The test-only decision route is declared like a real one, open to customers at route level.
    monkeypatch.setitem(ROUTE_ROLES, ("POST", APPROVE), "customer")
    db = tmp_path / "keys.db"
    keys = await _keys(db)
    client = await aiohttp_client(await _app(tmp_path, auth_mode="api_key", api_keys_db_path=str(db),
                                             api_keys_cache_seconds=0, approval_by="operator"))
    resp = await client.post("/api/v1/chat", json={"session_id": "s-acme", "message": "Hello"},
                             headers={"X-API-Key": keys["customer"]})
    assert resp.status == 200, await resp.text()
    yield World(client, keys, Target("s-acme", (await resp.json())["turn_id"]))


def _expect_forbidden(body: dict[str, Any], needed: str, have: str) -> None:
    assert_envelope(body, "forbidden")
    assert body["required_role"] == needed
    assert f"role {needed}" in body["message"] and have in body["message"]


@pytest.mark.parametrize(("method", "path"), ROUTES, ids=[f"{m} {p}" for m, p in ROUTES])
async def test_every_route_for_every_role(world: World, method: str, path: str) -> None:
    needed = ROUTE_ROLES[(method, path)]
    build = BUILDERS.get((method, path), _generic(method))
    for role in ROLES:
        kwargs = build(world.target, None)
        headers = {**kwargs.pop("headers", {}), "X-API-Key": world.keys[role]}
        resp = await world.client.request(method, _url(path, world.target), headers=headers, **kwargs)
        text = await body_text(resp)
        if allows(role, needed):
            assert resp.status not in (401, 403, 500), f"{role}: {resp.status} {text}"
        else:
            assert resp.status == 403, f"{role}: {resp.status} {text}"
            _expect_forbidden(await resp.json(), needed, role)


async def test_an_undeclared_route_is_for_admins_only(world: World) -> None:
    for role in ("customer", "operator"):
        resp = await world.client.get(UNDECLARED, headers={"X-API-Key": world.keys[role]})
        assert resp.status == 403
        _expect_forbidden(await resp.json(), "admin", role)
    resp = await world.client.get(UNDECLARED, headers={"X-API-Key": world.keys["admin"]})
    assert resp.status == 200 and await resp.json() == {"ok": True}


async def test_approval_by_operator_refuses_customers(world: World) -> None:
    resp = await world.client.post(APPROVE, headers={"X-API-Key": world.keys["customer"]})
    assert resp.status == 403
    _expect_forbidden(await resp.json(), "operator", "customer")
    for role in ("operator", "admin"):
        resp = await world.client.post(APPROVE, headers={"X-API-Key": world.keys[role]})
        assert resp.status == 200, await resp.text()


async def test_approval_by_anyone_lets_customers_decide(aiohttp_client: Any, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(ROUTE_ROLES, ("POST", APPROVE), "customer")
    db = tmp_path / "keys.db"
    keys = await _keys(db)
    client = await aiohttp_client(await _app(tmp_path, auth_mode="api_key", api_keys_db_path=str(db)))
    resp = await client.post(APPROVE, headers={"X-API-Key": keys["customer"]})
    assert resp.status == 200, await resp.text()


async def test_without_auth_every_route_is_open(aiohttp_client: Any, tmp_path: Path) -> None:
    client = await aiohttp_client(await _app(tmp_path, approval_by="operator"))
    assert (await client.get(UNDECLARED)).status == 200
    assert (await client.post(APPROVE)).status == 200


@pytest.mark.parametrize(("claims", "claim_name", "role"), [
    ({"roles": "operator"}, "roles", "operator"),
    ({"roles": ["customer", "admin"]}, "roles", "admin"),
    ({"roles": ["root", "superuser"]}, "roles", "customer"),  # unknown words grant nothing
    ({"roles": 7}, "roles", "customer"),
    ({}, "roles", "customer"),
    ({"https://acme.test/roles": ["admin"], "roles": "customer"}, "https://acme.test/roles", "admin"),
])
async def test_jwt_roles_claim(aiohttp_client: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                               claims: dict[str, Any], claim_name: str, role: str) -> None:
    monkeypatch.setitem(ROUTE_ROLES, ("POST", APPROVE), "customer")
    key = SigningKey("k1")
    async with Jwks(key).serving() as jwks:
        client = await aiohttp_client(await _app(
            tmp_path, auth_mode="jwt", jwt_jwks_url=jwks.url, jwt_issuer=ISSUER, jwt_audience=AUDIENCE,
            jwt_roles_claim=claim_name, approval_by="operator"))
        headers = {"Authorization": f"Bearer {key.token('acme', **claims)}"}
        resp = await client.get(UNDECLARED, headers=headers)
        assert resp.status == (200 if role == "admin" else 403), await resp.text()
        resp = await client.post(APPROVE, headers=headers)  # APPROVAL_BY=operator
        if role == "customer":
            assert resp.status == 403
            _expect_forbidden(await resp.json(), "operator", role)
        else:
            assert resp.status == 200, await resp.text()
        resp = await client.get("/api/v1/sessions", headers=headers)
        assert resp.status == 200, await resp.text()
