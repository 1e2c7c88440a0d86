"""The tenant under AUTH_MODE=none, and the edges of authentication: the failure rate limit, open
health and docs, OpenAPI's security schemes, and no credential in any log line."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from msev15.store.apikeys import KEY_RE
from tests.conftest import assert_envelope, matched
from tests.security.authkit import create_keys

# --- AUTH_MODE=none --------------------------------------------------------------------------


async def _chat(client, params: dict[str, str] | None = None, **body) -> tuple[int, dict]:
    resp = await client.post("/api/v1/chat", params=params or {}, json={"session_id": "s1", "message": "hi", **body})
    return resp.status, await resp.json()


async def test_none_mode_query_tenant_is_used_when_the_body_names_none(service) -> None:
    client = await service()
    status, body = await _chat(client, {"tenant_id": "acme"})
    assert status == 200 and body["tenant_id"] == "acme"
    listing = await (await client.get("/api/v1/sessions", params={"tenant_id": "acme"})).json()
    assert [s["session_id"] for s in listing["sessions"]] == ["s1"]
    default = await (await client.get("/api/v1/sessions")).json()
    assert default["sessions"] == []  # nothing landed in "default"


async def test_none_mode_query_and_body_must_agree(service) -> None:
    client = await service()
    status, body = await _chat(client, {"tenant_id": "acme"}, tenant_id="globex")
    assert status == 400
    assert_envelope(body, "validation_error")
    assert body["field"] == "tenant_id" and "differ" in body["message"]
    status, body = await _chat(client, {"tenant_id": "acme"}, tenant_id="acme")
    assert status == 200 and body["tenant_id"] == "acme"


async def test_none_mode_null_tenant_is_a_validation_error(service) -> None:
    client = await service()
    status, body = await _chat(client, tenant_id=None)
    assert status == 400
    assert_envelope(body, "validation_error")
    assert body["field"] == "tenant_id" and "null" in body["message"]


async def test_none_mode_absent_tenant_is_default(service) -> None:
    client = await service()
    status, body = await _chat(client)
    assert status == 200 and body["tenant_id"] == "default"


async def test_none_mode_needs_no_credential_and_ignores_one(service) -> None:
    client = await service()
    resp = await client.get("/api/v1/sessions", headers={"Authorization": "Bearer whatever"})
    assert resp.status == 200


# --- api_key mode edges -------------------------------------------------------------------------


@pytest.fixture
async def keyed(service, tmp_path: Path):
    db = tmp_path / "keys.db"
    made = await create_keys(db, "acme")

    async def start(**overrides):
        client = await service(auth_mode="api_key", api_keys_db_path=str(db), **overrides)
        return client, made["acme"]

    return start


async def test_health_stays_open_and_docs_are_open_by_default(keyed) -> None:
    client, _ = await keyed()
    for path in ("/health", "/health/liveness", "/docs", "/openapi.json"):
        assert (await client.get(path)).status == 200, path


async def test_docs_need_a_credential_with_auth_protect_docs(keyed) -> None:
    client, (_, key) = await keyed(auth_protect_docs=True)
    for path in ("/docs", "/redoc", "/openapi.json"):
        resp = await client.get(path)
        assert resp.status == 401, path
        assert_envelope(await resp.json(), "unauthorized")
        assert (await client.get(path, headers={"X-API-Key": key})).status == 200
    assert (await client.get("/health")).status == 200


async def test_openapi_declares_both_schemes_and_requires_one_on_api_routes(keyed) -> None:
    client, _ = await keyed()
    spec = await (await client.get("/openapi.json")).json()
    schemes = spec["components"]["securitySchemes"]
    assert schemes["ApiKey"] == {**schemes["ApiKey"], "type": "apiKey", "in": "header", "name": "X-API-Key"}
    assert schemes["Bearer"]["type"] == "http" and schemes["Bearer"]["scheme"] == "bearer"
    for path, operations in spec["paths"].items():
        for operation in operations.values():
            if path.startswith("/api/") or path in ("/a2a", "/mcp"):  # the agent-to-agent endpoints too
                assert operation["security"] == [{"ApiKey": []}, {"Bearer": []}], path
                assert {"401", "403" if path != "/a2a" else "401"} <= set(operation["responses"]), path
            else:
                assert "security" not in operation, path


async def test_openapi_in_none_mode_declares_the_schemes_but_requires_none(service) -> None:
    client = await service()
    spec = await (await client.get("/openapi.json")).json()
    assert set(spec["components"]["securitySchemes"]) == {"ApiKey", "Bearer"}
    assert all("security" not in op for ops in spec["paths"].values() for op in ops.values())


async def test_failed_authentications_are_rate_limited_per_client(keyed) -> None:
    client, (_, key) = await keyed(auth_max_failures_per_minute=3)
    for _ in range(3):
        assert (await client.get("/api/v1/sessions", headers={"X-API-Key": "nope"})).status == 401
    blocked = await client.get("/api/v1/sessions", headers={"X-API-Key": key})  # even a good key now
    assert blocked.status == 429
    body = await blocked.json()
    assert_envelope(body, "too_many_failed_authentications")
    assert int(blocked.headers["Retry-After"]) >= 1
    assert (await client.get("/health")).status == 200


async def test_successes_do_not_count_toward_the_failure_limit(keyed) -> None:
    client, (_, key) = await keyed(auth_max_failures_per_minute=2)
    for _ in range(10):
        assert (await client.get("/api/v1/sessions", headers={"X-API-Key": key})).status == 200


async def test_no_credential_reaches_a_log_line(keyed, caplog: pytest.LogCaptureFixture) -> None:
    client, (_, key) = await keyed()
    garbage = "msev15_0123456789abcdef_" + "Z" * 43
    caplog.set_level(logging.DEBUG)
    await client.get("/api/v1/sessions", headers={"X-API-Key": key})
    await client.post("/api/v1/chat", json={"session_id": "s", "message": "hi"},
                      headers={"Authorization": f"Bearer {key}"})
    await client.get("/api/v1/sessions", headers={"X-API-Key": garbage})
    await client.get("/api/v1/sessions", headers={"Authorization": f"Bearer {garbage}"})
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "authentication refused" in text  # the refusal is logged...
    for secret in (key, matched(KEY_RE, key, full=True)["secret"], garbage, "Z" * 43):
        assert secret not in text  # ...without the credential


async def test_a_key_of_another_tenant_cannot_read_acme(keyed, tmp_path: Path) -> None:
    client, (_, acme) = await keyed()
    globex = (await create_keys(tmp_path / "keys.db", "globex"))["globex"][1]
    resp = await client.post("/api/v1/chat", json={"session_id": "s1", "message": "acme secret"},
                             headers={"X-API-Key": acme})
    assert resp.status == 200 and (await resp.json())["tenant_id"] == "acme"
    other = await client.get("/api/v1/sessions/s1/history", headers={"X-API-Key": globex})
    assert other.status == 404
    listing = await (await client.get("/api/v1/sessions", headers={"X-API-Key": globex})).json()
    assert listing["tenant_id"] == "globex" and listing["sessions"] == []
    mine = await client.get("/api/v1/sessions/s1/history", headers={"X-API-Key": acme})
    assert "acme secret" in await mine.text()


# --- the banner's warnings ------------------------------------------------------------------------


def test_banner_warns_about_open_doors_beyond_loopback(tmp_path: Path) -> None:
    from msev15.banner import security_warnings
    from tests.conftest import make_settings

    assert security_warnings(make_settings(tmp_path, server_host="127.0.0.1")) == []
    [open_api] = security_warnings(make_settings(tmp_path, server_host="0.0.0.0"))
    assert "AUTH_MODE=none on 0.0.0.0" in open_api
    assert security_warnings(make_settings(tmp_path, server_host="0.0.0.0", auth_mode="api_key")) == []
    remote = make_settings(tmp_path, server_host="127.0.0.1", mcp_server_url="http://mcp.internal:8000/mcp")
    [mcp] = security_warnings(remote)
    assert "MCP_SERVER_URL points at mcp.internal" in mcp
    assert security_warnings(remote.replace(mcp_auth_token="t")) == []


async def test_two_credentials_in_one_request_are_refused(keyed) -> None:
    """Authorization and X-API-Key together: a proxy may have checked one and the service would use
    the other, so neither is believed. Each alone is accepted."""
    client, (_, key) = await keyed()
    both = await client.get("/api/v1/sessions", headers={"Authorization": f"Bearer {key}", "X-API-Key": key})
    assert both.status == 401
    body = await both.json()
    assert_envelope(body, "unauthorized")
    assert "two credentials" in body["detail"]
    assert (await client.get("/api/v1/sessions", headers={"Authorization": f"Bearer {key}"})).status == 200
    assert (await client.get("/api/v1/sessions", headers={"X-API-Key": key})).status == 200


async def test_the_tenant_rate_limit_counts_every_request_of_an_authenticated_tenant_once(keyed) -> None:
    """Under AUTH_MODE=api_key the tenant is known for every /api/ request: a list without
    ?tenant_id counts, and a chat counts once (not again when its turn starts)."""
    client, (_, key) = await keyed(rate_limit_per_tenant_per_minute=4)
    auth = {"X-API-Key": key}
    assert (await client.get("/api/v1/sessions", headers=auth)).status == 200  # 1
    assert (await client.post("/api/v1/chat", json={"session_id": "a", "message": "hi"}, headers=auth)).status == 200
    assert (await client.post("/api/v1/chat", json={"session_id": "b", "message": "hi"}, headers=auth)).status == 200
    assert (await client.get("/api/v1/sessions/a/history", headers=auth)).status == 200  # 4: at the limit
    refused = await client.get("/api/v1/sessions", headers=auth)
    assert refused.status == 429
    assert_envelope(await refused.json(), "tenant_rate_limited")
    assert (await client.get("/health")).status == 200  # not counted, not limited


def test_failure_limiter_survives_a_failure_that_aged_out() -> None:
    """One failure, a quiet minute, a check from the same address, then failures from anywhere: an
    entry emptied by that check used to stay behind and the next sweep raised IndexError (500 on
    every failure, and the lockout never triggered again)."""
    from msev15.common.failures import FailureWindow

    now = [0.0]
    failures = FailureWindow(3, clock=lambda: now[0])
    failures.fail("10.0.0.1")
    now[0] = 61.0
    assert failures.blocked("10.0.0.1") is None  # the old failure left the window
    now[0] = 80.0
    for _ in range(3):
        failures.fail("10.0.0.2")  # the sweep runs on the first of these
    assert failures.blocked("10.0.0.2") is not None  # the lockout still triggers
    assert failures.blocked("10.0.0.1") is None
    assert len(failures) == 1  # the aged-out client was swept
