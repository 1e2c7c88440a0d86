"""Middlewares, health, CORS, rate limiting and the API docs, on the real app."""

from __future__ import annotations

import io
import json

from aiohttp import web

from msev15.agent.context import RUNNER
from msev15.app import create_app
from msev15.logs.service import setup_logging
from msev15.logs.writer import close_logging
from msev15.store.limits import RateLimiter
from tests.conftest import assert_envelope, make_settings


async def test_request_id_is_echoed_or_generated(service) -> None:
    client = await service()
    resp = await client.get("/health", headers={"X-Request-ID": "client-abc.123"})
    assert resp.headers["X-Request-ID"] == "client-abc.123"
    generated = await client.get("/health")
    assert len(generated.headers["X-Request-ID"]) == 32
    # Hostile ids are replaced, not reflected.
    for bad in ("x" * 129, "has space", "new\\nline"):
        resp = await client.get("/health", headers={"X-Request-ID": bad})
        assert resp.headers["X-Request-ID"] != bad


async def test_error_envelope_carries_the_request_id(service) -> None:
    client = await service()
    resp = await client.get("/nope", headers={"X-Request-ID": "trace-1"})
    assert resp.status == 404
    body = await resp.json()
    assert_envelope(body, "not_found")
    assert body["request_id"] == "trace-1" and resp.headers["X-Request-ID"] == "trace-1"


async def test_wrong_method_is_405_with_allow(service) -> None:
    client = await service()
    resp = await client.put("/api/v1/chat", json={})
    assert resp.status == 405
    assert_envelope(await resp.json(), "method_not_allowed")
    assert "POST" in resp.headers["Allow"]


async def test_body_over_the_limit_is_413(service) -> None:
    client = await service(max_body_bytes=2048)
    resp = await client.post("/api/v1/chat", json={"session_id": "s", "message": "x" * 5000})
    assert resp.status == 413
    assert_envelope(await resp.json(), "payload_too_large")
    assert (await (await client.get("/api/v1/sessions")).json())["total"] == 0


async def test_unexpected_exception_is_500_without_internals(aiohttp_client, tmp_path) -> None:
    settings = make_settings(tmp_path, log_to_file=True)

    async def boom(request: web.Request) -> web.Response:
        raise RuntimeError("secret internal detail")

    app = await create_app(settings)
    app.router.add_get("/boom", boom)
    setup_logging(settings, stream=io.StringIO())
    try:
        client = await aiohttp_client(app)
        resp = await client.get("/boom", headers={"X-Request-ID": "req-500"})
        assert resp.status == 500
        body = await resp.json()
        assert_envelope(body, "internal_error")
        assert "secret internal detail" not in json.dumps(body)
    finally:
        close_logging()
    logged = (tmp_path / "logs" / "app.log").read_text()
    line = next(line for line in logged.splitlines() if "unhandled error on GET /boom" in line)
    assert "| ERROR | api.errors |" in line and "req=req-500" in line
    assert "RuntimeError: secret internal detail" in logged  # the traceback is in the log, not the response


async def test_health_and_liveness(service) -> None:
    client = await service()
    health = await (await client.get("/health")).json()
    assert health["status"] == "healthy" and health["timestamp"].endswith("Z")
    live = await (await client.get("/health/liveness")).json()
    assert live["status"] == "alive" and isinstance(live["uptime_seconds"], int)


async def test_readiness_reports_each_check(service) -> None:
    client = await service()
    resp = await client.get("/health/readiness")
    assert resp.status == 200
    body = await resp.json()
    assert body["status"] == "ready"
    assert body["checks"] == {"api": "healthy", "mcp_server": "not_configured", "azure_openai": "offline",
                              "model": {"status": "offline", "provider": "offline", "endpoint": ""},
                              "smtp": "outbox", "session_store": "healthy"}
    assert body["warnings"] == []


async def test_readiness_without_a_model_warns(service) -> None:
    client = await service(llm_provider="auto")
    body = await (await client.get("/health/readiness")).json()
    assert body["checks"]["azure_openai"] == "not_configured"
    assert any("offline assistant" in w for w in body["warnings"])


async def test_readiness_is_503_while_shutting_down(service) -> None:
    client = await service()
    client.app[RUNNER].begin_shutdown(60)
    resp = await client.get("/health/readiness")
    assert resp.status == 503
    assert (await resp.json())["status"] == "not_ready"
    chat = await client.post("/api/v1/chat", json={"session_id": "s", "message": "hi"})
    assert chat.status == 503
    assert_envelope(await chat.json(), "shutting_down")


async def test_cors_preflight_and_simple_request(service) -> None:
    client = await service(cors_origins=("https://app.example.com",))
    preflight = await client.options("/api/v1/chat/stream", headers={
        "Origin": "https://app.example.com", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type,x-request-id"})
    assert preflight.status == 200
    assert preflight.headers["Access-Control-Allow-Origin"] == "https://app.example.com"
    assert preflight.headers["Access-Control-Allow-Credentials"] == "true"
    assert "POST" in preflight.headers["Access-Control-Allow-Methods"]
    resp = await client.get("/health", headers={"Origin": "https://app.example.com"})
    assert resp.headers["Access-Control-Allow-Origin"] == "https://app.example.com"
    stream = await client.post("/api/v1/chat/stream", json={"session_id": "s", "message": "hi"},
                               headers={"Origin": "https://app.example.com"})
    assert stream.headers["Access-Control-Allow-Origin"] == "https://app.example.com"
    await stream.text()
    other = await client.options("/api/v1/chat", headers={
        "Origin": "https://evil.example.com", "Access-Control-Request-Method": "POST"})
    assert other.status == 403


async def test_cors_disabled_sends_no_headers(service) -> None:
    client = await service(enable_cors=False)
    resp = await client.get("/health", headers={"Origin": "https://app.example.com"})
    assert "Access-Control-Allow-Origin" not in resp.headers


async def test_rate_limit_headers_and_429(service) -> None:
    client = await service(enable_rate_limiting=True, rate_limit_per_minute=3)
    for remaining in (2, 1, 0):
        resp = await client.get("/api/v1/sessions")
        assert resp.status == 200
        assert resp.headers["X-RateLimit-Limit"] == "3"
        assert resp.headers["X-RateLimit-Remaining"] == str(remaining)
        assert int(resp.headers["X-RateLimit-Reset"]) > 0
    limited = await client.post("/api/v1/chat", json={"session_id": "s", "message": "hi"})
    assert limited.status == 429
    body = await limited.json()
    assert body["error"] == "Rate limit exceeded"
    assert body["message"] == "Maximum 3 requests per minute per IP address"
    assert 1 <= body["retry_after"] <= 60 and limited.headers["Retry-After"] == str(body["retry_after"])
    assert limited.headers["X-RateLimit-Remaining"] == "0"
    # Health and docs stay reachable.
    for path in ("/health", "/health/readiness", "/openapi.json", "/docs"):
        assert (await client.get(path)).status == 200


async def test_rate_limit_applies_to_streams(service) -> None:
    client = await service(enable_rate_limiting=True, rate_limit_per_minute=1)
    first = await client.post("/api/v1/chat/stream", json={"session_id": "s", "message": "hi"})
    assert first.headers["X-RateLimit-Remaining"] == "0"
    await first.text()
    assert (await client.post("/api/v1/chat/stream", json={"session_id": "s", "message": "hi"})).status == 429


def test_rate_limiter_window_slides_and_forgets_idle_clients() -> None:
    now = [0.0]
    limiter = RateLimiter(2, clock=lambda: now[0])
    assert limiter.hit("a")[0] and limiter.hit("a")[0]
    allowed, remaining, retry = limiter.hit("a")
    assert not allowed and remaining == 0 and retry == 60
    now[0] = 30.0
    assert limiter.hit("b")[0]
    now[0] = 60.5  # a's hits left the window
    assert limiter.hit("a")[0]
    for i in range(1000):
        limiter.hit(f"10.0.{i // 250}.{i % 250}")
    assert len(limiter) >= 1000
    now[0] = 200.0
    limiter.hit("z")
    assert len(limiter) == 1  # idle clients were swept


def test_forwarded_for_is_trusted_only_from_proxies() -> None:
    limiter = RateLimiter(10, trusted_proxies=("10.0.0.0/8", "::1"))
    assert limiter.client_ip("203.0.113.9", "1.2.3.4") == "203.0.113.9"
    assert limiter.client_ip("10.1.2.3", "1.2.3.4") == "1.2.3.4"
    assert limiter.client_ip("10.1.2.3", "6.6.6.6, 1.2.3.4, 10.9.9.9") == "1.2.3.4"
    assert limiter.client_ip("::1", "  ") == "::1"
    assert RateLimiter(10).client_ip("10.1.2.3", "1.2.3.4") == "10.1.2.3"


async def test_openapi_documents_every_route(service) -> None:
    client = await service()
    spec = await (await client.get("/openapi.json")).json()
    assert spec["openapi"].startswith("3.")
    expected = {
        ("/api/v1/chat", "post"), ("/api/v1/chat/stream", "post"), ("/api/v1/sessions", "get"),
        ("/api/v1/sessions/{session_id}/history", "get"), ("/api/v1/sessions/{session_id}", "delete"),
        ("/health", "get"), ("/health/liveness", "get"), ("/health/readiness", "get"),
    }
    found = {(path, method) for path, ops in spec["paths"].items() for method in ops}
    assert expected <= found
    for path, method in expected:
        operation = spec["paths"][path][method]
        assert operation["summary"] and "200" in operation["responses"]
    assert "ChatRequest" in spec["components"]["schemas"]
    assert "400" in spec["paths"]["/api/v1/chat"]["post"]["responses"]


async def test_docs_pages_render_offline(service) -> None:
    client = await service(redoc_js_url="https://mirror.example.com/redoc.js")
    docs = await client.get("/docs")
    assert docs.status == 200 and "swagger-ui" in await docs.text()
    asset = await client.get("/docs/static/swagger-ui-bundle.js")
    assert asset.status == 200 and len(await asset.read()) > 100_000
    redoc = await (await client.get("/redoc")).text()
    assert 'src="https://mirror.example.com/redoc.js"' in redoc


async def test_openapi_documents_the_configured_message_limit(service) -> None:
    client = await service(max_message_chars=500)
    spec = await (await client.get("/openapi.json")).json()
    assert spec["components"]["schemas"]["ChatRequest"]["properties"]["message"]["maxLength"] == 500


async def test_sse_pings_keep_idle_streams_open(service, llm) -> None:
    from tests.llm_server import Reply

    llm.push(Reply("slow words here", delay=0.3))
    client = await service(llm_provider="openai", openai_base_url=f"{llm.url}/v1", llm_max_retries=0,
                           sse_ping_seconds=0.1)
    resp = await client.post("/api/v1/chat/stream", json={"session_id": "s", "message": "hi"})
    body = await resp.text()
    assert ": ping" in body
    assert body.rstrip().splitlines()[-1].startswith('data: {"type": "done"')


async def test_a_preflight_without_origin_is_403_in_the_envelope(service) -> None:
    """aiohttp-cors refuses an OPTIONS without Origin with a bare 403: it comes back as the
    envelope's ``forbidden``, like every other refusal."""
    client = await service()
    resp = await client.options("/api/v1/chat")
    assert resp.status == 403
    assert_envelope(await resp.json(), "forbidden")
    good = await client.options("/api/v1/chat", headers={"Origin": "https://app.example",
                                                         "Access-Control-Request-Method": "POST"})
    assert good.status == 200 and good.headers["Access-Control-Allow-Origin"] == "*"


async def test_responses_do_not_name_the_server_software_versions(service) -> None:
    client = await service()
    for resp in (await client.get("/health"), await client.get("/no/such/path"),
                 await client.post("/api/v1/chat/stream", json={"session_id": "s", "message": "hi"})):
        await resp.read()
        assert resp.headers["Server"] == "msev15", resp.headers.get("Server")


async def test_json_bodies_carry_typography_as_itself(service) -> None:
    """The offline assistant's order line says "— 2 × WIDGET-9": the body shows it, not \\u2014."""
    client = await service()
    resp = await client.post("/api/v1/chat", json={"session_id": "typo", "message": (
        "Please create an order for customer CUST-001: 2 x SKU WIDGET-9 at 19.99, ship to 1 Main St")})
    raw = await resp.text()
    assert resp.status == 200 and resp.charset == "utf-8"
    assert "— 2 × WIDGET-9" in raw and "\\u2014" not in raw and "\\u00d7" not in raw
    history = await (await client.get("/api/v1/sessions/typo/history")).text()
    assert "— 2 × WIDGET-9" in history
