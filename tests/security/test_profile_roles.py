"""Who may read and change a tenant's agent profile: its admins, and only their own tenant's."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient

from msev15.app import create_app
from msev15.common.roles import ROLES
from msev15.store.apikeys import SqliteApiKeyStore
from tests.conftest import assert_envelope, make_settings

URL = "/api/v1/agent-profile"
PROFILE = {"instructions": "Acme only.",
           "mcp_servers": [{"name": "crm", "url": "https://crm.acme.example/mcp",
                            "headers": {"Authorization": "Bearer acme-secret-token"}}]}
CALLS: list[tuple[str, str, Any]] = [
    ("GET", URL, None), ("PUT", URL, PROFILE), ("DELETE", URL, None), ("GET", URL + "/versions", None),
    ("GET", URL + "/versions/1", None), ("POST", URL + "/rollback", {"version": 1}),
]


async def _keys(db: Path) -> dict[str, str]:
    """"acme-<role>" for each role, and "globex-admin"."""
    store = SqliteApiKeyStore(db)
    try:
        keys = {f"acme-{role}": (await store.create("acme", f"acme-{role}", role))[1] for role in ROLES}
        keys["globex-admin"] = (await store.create("globex", "globex-admin", "admin"))[1]
        return keys
    finally:
        await store.close()


async def _client(aiohttp_client: Any, tmp_path: Path) -> tuple[TestClient, dict[str, str]]:
    db = tmp_path / "keys.db"
    keys = await _keys(db)
    app = await create_app(make_settings(tmp_path, auth_mode="api_key", api_keys_db_path=str(db),
                                         api_keys_cache_seconds=0))
    return await aiohttp_client(app), keys


async def test_customers_and_operators_are_refused_admins_served(aiohttp_client: Any, tmp_path: Path) -> None:
    client, keys = await _client(aiohttp_client, tmp_path)
    for role in ("customer", "operator"):
        for method, path, body in CALLS:
            resp = await client.request(method, path, json=body, headers={"X-API-Key": keys[f"acme-{role}"]})
            assert resp.status == 403, (role, method, path)
            found = await resp.json()
            assert_envelope(found, "forbidden")
            assert found["required_role"] == "admin"
    admin = {"X-API-Key": keys["acme-admin"]}
    resp = await client.put(URL, json=PROFILE, headers=admin)
    assert resp.status == 200 and await resp.json() == {"version": 1}
    resp = await client.get(URL, headers=admin)
    body = await resp.json()
    assert resp.status == 200 and body["updated_by"] == "acme-admin", "the key's name"
    assert body["profile"]["mcp_servers"][0]["headers"] == {"Authorization": "***"}
    assert (await client.get(URL + "/versions", headers=admin)).status == 200
    assert (await client.post(URL + "/rollback", json={"version": 1}, headers=admin)).status == 200
    assert (await client.delete(URL, headers=admin)).status == 204


async def test_another_tenants_admin_sees_only_its_own(aiohttp_client: Any, tmp_path: Path) -> None:
    client, keys = await _client(aiohttp_client, tmp_path)
    assert (await client.put(URL, json=PROFILE, headers={"X-API-Key": keys["acme-admin"]})).status == 200
    other = {"X-API-Key": keys["globex-admin"]}
    for path in (URL, URL + "/versions/1"):
        resp = await client.get(path, headers=other)
        assert resp.status == 404, path
        assert_envelope(await resp.json(), "no_profile")
    assert await (await client.get(URL + "/versions", headers=other)).json() == {"versions": []}
    resp = await client.post(URL + "/rollback", json={"version": 1}, headers=other)
    assert resp.status == 404, "acme's version 1 is not globex's to restore"
    for method, path, body in CALLS:  # naming acme's tenant with globex's key
        resp = await client.request(method, path + "?tenant_id=acme", json=body, headers=other)
        assert resp.status == 403, (method, path)
        assert_envelope(await resp.json(), "tenant_mismatch")
    assert (await client.delete(URL, headers=other)).status == 204  # globex's own: nothing to delete
    resp = await client.get(URL, headers={"X-API-Key": keys["acme-admin"]})
    body = await resp.json()
    assert resp.status == 200 and body["version"] == 1, "acme's profile is untouched"
    assert "acme-secret-token" not in await resp.text()


async def test_a_token_admin_writes_as_its_subject_and_a_token_customer_is_refused(aiohttp_client: Any,
                                                                                   tmp_path: Path) -> None:
    from tests.security.authkit import AUDIENCE, ISSUER, Jwks, SigningKey

    key = SigningKey("k1")
    async with Jwks(key).serving() as jwks:
        client = await aiohttp_client(await create_app(make_settings(
            tmp_path, auth_mode="jwt", jwt_jwks_url=jwks.url, jwt_issuer=ISSUER, jwt_audience=AUDIENCE)))
        customer = {"Authorization": f"Bearer {key.token('acme', sub='cust-7')}"}
        resp = await client.put(URL, json=PROFILE, headers=customer)
        assert resp.status == 403
        assert_envelope(await resp.json(), "forbidden")
        admin = {"Authorization": f"Bearer {key.token('acme', sub='alice@acme', roles=['admin'])}"}
        assert (await client.put(URL, json=PROFILE, headers=admin)).status == 200
        body = await (await client.get(URL, headers=admin)).json()
        assert body["updated_by"] == "alice@acme"
        other = {"Authorization": f"Bearer {key.token('globex', sub='bob', roles=['admin'])}"}
        assert (await client.get(URL, headers=other)).status == 404
