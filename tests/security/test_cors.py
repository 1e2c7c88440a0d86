"""CORS: with '*' any origin gets '*' and never credentials; credentials only for listed origins.
Preflights of listed origins work on every route, the streaming ones included."""

from __future__ import annotations

import pytest

EVIL, LISTED = "https://evil.test", "https://app.example.com"
ROUTES = [("POST", "/api/v1/chat"), ("POST", "/api/v1/chat/stream"), ("GET", "/api/v1/sessions"),
          ("GET", "/api/v1/sessions/s1/turns/t1/events")]


def _preflight(origin: str, method: str) -> dict[str, str]:
    return {"Origin": origin, "Access-Control-Request-Method": method,
            "Access-Control-Request-Headers": "content-type,authorization,last-event-id"}


@pytest.mark.parametrize("origin", [EVIL, LISTED])
async def test_star_answers_star_without_credentials(service, origin: str) -> None:
    client = await service(cors_origins=("*",))
    resp = await client.get("/api/v1/sessions", headers={"Origin": origin})
    assert resp.headers["Access-Control-Allow-Origin"] == "*"
    assert "Access-Control-Allow-Credentials" not in resp.headers
    for method, path in ROUTES:
        pre = await client.options(path, headers=_preflight(origin, method))
        assert pre.status == 200, path
        assert pre.headers["Access-Control-Allow-Origin"] == "*"
        assert "Access-Control-Allow-Credentials" not in pre.headers


async def test_star_on_an_error_response_does_not_reflect_the_origin(service) -> None:
    client = await service(cors_origins=("*",))
    resp = await client.post("/api/v1/chat", json={}, headers={"Origin": EVIL})
    assert resp.status == 400
    assert resp.headers["Access-Control-Allow-Origin"] == "*"
    assert "Access-Control-Allow-Credentials" not in resp.headers


async def test_a_listed_origin_gets_itself_and_credentials(service) -> None:
    client = await service(cors_origins=(LISTED,))
    resp = await client.get("/api/v1/sessions", headers={"Origin": LISTED})
    assert resp.headers["Access-Control-Allow-Origin"] == LISTED
    assert resp.headers["Access-Control-Allow-Credentials"] == "true"
    for method, path in ROUTES:
        pre = await client.options(path, headers=_preflight(LISTED, method))
        assert pre.status == 200, path
        assert pre.headers["Access-Control-Allow-Origin"] == LISTED
        assert pre.headers["Access-Control-Allow-Credentials"] == "true"
    stream = await client.post("/api/v1/chat/stream", json={"session_id": "s", "message": "hi"},
                               headers={"Origin": LISTED})
    assert stream.headers["Access-Control-Allow-Origin"] == LISTED
    await stream.read()


async def test_an_unlisted_origin_gets_nothing_when_the_list_is_explicit(service) -> None:
    client = await service(cors_origins=(LISTED,))
    resp = await client.get("/api/v1/sessions", headers={"Origin": EVIL})
    assert "Access-Control-Allow-Origin" not in resp.headers
    assert "Access-Control-Allow-Credentials" not in resp.headers
    pre = await client.options("/api/v1/chat", headers=_preflight(EVIL, "POST"))
    assert pre.status == 403
    assert "Access-Control-Allow-Origin" not in pre.headers


async def test_star_and_a_list_together(service) -> None:
    client = await service(cors_origins=("*", LISTED))
    listed = await client.get("/api/v1/sessions", headers={"Origin": LISTED})
    assert listed.headers["Access-Control-Allow-Origin"] == LISTED
    assert listed.headers["Access-Control-Allow-Credentials"] == "true"
    evil = await client.get("/api/v1/sessions", headers={"Origin": EVIL})
    assert evil.headers["Access-Control-Allow-Origin"] == "*"
    assert "Access-Control-Allow-Credentials" not in evil.headers


async def test_preflights_pass_the_auth_middleware(service, tmp_path) -> None:
    """A browser's preflight carries no credential: it must not get 401 under AUTH_MODE=api_key."""
    client = await service(cors_origins=(LISTED,), auth_mode="api_key", api_keys_db_path=str(tmp_path / "k.db"))
    pre = await client.options("/api/v1/chat/stream", headers=_preflight(LISTED, "POST"))
    assert pre.status == 200
    resp = await client.get("/api/v1/sessions", headers={"Origin": LISTED})
    assert resp.status == 401
    assert resp.headers["Access-Control-Allow-Origin"] == LISTED  # the browser can read the 401
    assert "WWW-Authenticate" in resp.headers["Access-Control-Expose-Headers"]
