"""GET /metrics: the Prometheus text format, labelled by route templates and (optionally, capped)
tenants, protected by METRICS_TOKEN, exempt from rate limits; and the per-tenant rate limit."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from msev15.events.metrics import METRICS
from msev15.store.limits import TENANT_LIMITER
from tests.complaints.server import eventually
from tests.conftest import assert_envelope


async def _samples(client: Any, **headers: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    resp = await client.get("/metrics", headers=headers)
    assert resp.status == 200, await resp.text()
    assert resp.headers["Content-Type"].startswith("text/plain")
    found = {}
    for family in text_string_to_metric_families(await resp.text()):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def _value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def _turns_seen(client: Any, count: float, outcome: str = "completed", **labels: str) -> None:
    """The bus subscriber counts asynchronously: wait (bounded) until it has caught up."""
    registry = client.server.app[METRICS].registry

    def seen() -> bool:
        return (registry.get_sample_value("msev15_turns_total", {"outcome": outcome, **labels}) or 0) >= count
    await eventually(seen, "turn metrics")


async def test_metrics_count_requests_by_route_template_turns_tokens_and_gauges(service) -> None:
    client = await service()
    assert (await client.post("/api/v1/chat", json={"session_id": "abc-123", "message": "hello"})).status == 200
    stream = await client.post("/api/v1/chat/stream", json={"session_id": "abc-123", "message": "hi"})
    await stream.text()
    assert (await client.get("/api/v1/sessions/abc-123/history")).status == 200
    assert (await client.get("/no/such/path-9f8e7d")).status == 404
    await _turns_seen(client, 2)

    samples = await _samples(client)
    route = "/api/v1/sessions/{session_id}/history"
    assert _value(samples, "msev15_http_requests_total", route=route, method="GET", status="200") == 1
    assert _value(samples, "msev15_http_requests_total", route="unmatched", method="GET", status="404") == 1
    assert not any("abc-123" in str(k) or "9f8e7d" in str(k) for k in samples)  # never a raw path
    assert _value(samples, "msev15_http_request_duration_seconds_count", route="/api/v1/chat", method="POST") == 1
    assert _value(samples, "msev15_turns_total", outcome="completed") == 2
    assert _value(samples, "msev15_turn_duration_seconds_count") == 2
    assert _value(samples, "msev15_time_to_first_token_seconds_count") == 2
    assert _value(samples, "msev15_tokens_total", kind="completion") > 0
    assert _value(samples, "msev15_tokens_total", kind="prompt") > 0
    assert _value(samples, "msev15_sessions", store="memory") == 1
    assert ("msev15_turns_queued", ()) in samples and ("msev15_turns_running", ()) in samples
    assert ("msev15_open_streams", ()) in samples


async def test_made_up_methods_cannot_grow_the_series(service) -> None:
    """The HTTP parser knows dozens of methods (WebDAV, CalDAV, ...): beyond the standard ones, a
    scan is counted as ``other``, not as a series per method."""
    client = await service()
    scan = ("PROPFIND", "MKCOL", "COPY", "MOVE", "LOCK", "UNLOCK", "SEARCH", "PURGE", "REPORT", "SUBSCRIBE")
    for method in scan:
        resp = await client.request(method, "/api/v1/chat")
        assert resp.status == 405
        assert_envelope(await resp.json(), "method_not_allowed")
    assert (await client.get("/health")).status == 200  # the good twin keeps its own method

    samples = await _samples(client)
    assert not any(method in str(key) for key in samples for method in scan)
    assert _value(samples, "msev15_http_requests_total", route="unmatched", method="other", status="405") == len(scan)
    assert _value(samples, "msev15_http_requests_total", route="/health", method="GET", status="200") == 1


async def test_tool_calls_and_failed_turns_are_counted(service) -> None:
    client = await service()
    resp = await client.post("/api/v1/chat", json={"session_id": "s", "message": "where is order ORD-ZZZZ9999?"})
    assert resp.status == 200
    await _turns_seen(client, 1)
    samples = await _samples(client)
    assert _value(samples, "msev15_tool_calls_total", tool="get_order_by_id", outcome="error") == 1


async def test_metrics_token_protects_the_endpoint(service) -> None:
    client = await service(metrics_token="s3cret-metrics")
    resp = await client.get("/metrics")
    assert resp.status == 401
    assert_envelope(await resp.json(), "unauthorized")
    wrong = await client.get("/metrics", headers={"Authorization": "Bearer nope"})
    assert wrong.status == 401
    await _samples(client, Authorization="Bearer s3cret-metrics")


async def test_metrics_token_scheme_is_case_insensitive(service) -> None:
    client = await service(metrics_token="s3cret-metrics")
    for scheme in ("bearer", "BEARER", "Bearer"):
        await _samples(client, Authorization=f"{scheme} s3cret-metrics")


async def test_guessing_the_metrics_token_is_throttled(service) -> None:
    client = await service(metrics_token="s3cret-metrics", auth_max_failures_per_minute=3)
    for n in range(3):
        assert (await client.get("/metrics", headers={"Authorization": f"Bearer guess-{n}"})).status == 401
    blocked = await client.get("/metrics", headers={"Authorization": "Bearer s3cret-metrics"})
    assert blocked.status == 429 and int(blocked.headers["Retry-After"]) >= 1
    assert_envelope(await blocked.json(), "too_many_failed_authentications")
    # The API's own failed-authentication count is a separate one: /api/ is untouched.
    assert (await client.get("/api/v1/sessions")).status == 200


async def test_tenant_labels_are_opt_in_and_capped(service) -> None:
    client = await service(metrics_tenant_labels=True, metrics_max_tenants=2)
    for tenant in ("t1", "t2", "t3", "t4"):
        resp = await client.post("/api/v1/chat", json={"session_id": "s", "message": "hi", "tenant_id": tenant})
        assert resp.status == 200
    await _turns_seen(client, 2, tenant="other")
    samples = await _samples(client)
    assert _value(samples, "msev15_turns_total", outcome="completed", tenant="t1") == 1
    assert _value(samples, "msev15_turns_total", outcome="completed", tenant="t2") == 1
    assert _value(samples, "msev15_turns_total", outcome="completed", tenant="other") == 2
    assert not any(("tenant", "t3") in k[1] for k in samples)


async def test_without_tenant_labels_no_series_names_a_tenant(service) -> None:
    client = await service()
    await client.post("/api/v1/chat", json={"session_id": "s", "message": "hi", "tenant_id": "acme"})
    await _turns_seen(client, 1)
    assert not any("acme" in str(k) for k in await _samples(client))


async def test_metrics_are_exempt_from_the_ip_rate_limit_which_is_counted(service) -> None:
    client = await service(enable_rate_limiting=True, rate_limit_per_minute=2)
    for _ in range(2):
        assert (await client.get("/api/v1/sessions")).status == 200
    limited = await client.get("/api/v1/sessions")
    assert limited.status == 429
    for _ in range(5):
        samples = await _samples(client)
    assert _value(samples, "msev15_rate_limited_total", scope="ip") == 1


async def test_the_per_tenant_rate_limit_refuses_only_that_tenant(service) -> None:
    client = await service(rate_limit_per_tenant_per_minute=3)
    for i in range(3):
        resp = await client.post("/api/v1/chat", json={"session_id": f"s{i}", "message": "hi", "tenant_id": "loud"})
        assert resp.status == 200
    refused = await client.post("/api/v1/chat", json={"session_id": "s9", "message": "hi", "tenant_id": "loud"})
    assert refused.status == 429
    assert_envelope(await refused.json(), "tenant_rate_limited")
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    listed = await client.get("/api/v1/sessions", params={"tenant_id": "loud"})  # counted in the query too
    assert listed.status == 429
    quiet = await client.post("/api/v1/chat", json={"session_id": "s", "message": "hi", "tenant_id": "quiet"})
    assert quiet.status == 200
    assert _value(await _samples(client), "msev15_rate_limited_total", scope="tenant") == 2


async def test_two_apps_keep_separate_registries(service) -> None:
    first = await service()
    second = await service()
    await first.post("/api/v1/chat", json={"session_id": "s", "message": "hi"})
    await _turns_seen(first, 1)
    assert _value(await _samples(second), "msev15_turns_total", outcome="completed") == 0


async def test_every_metric_of_the_grafana_dashboard_is_exported(service) -> None:
    import json
    import re
    from pathlib import Path

    dashboard = json.loads((Path(__file__).resolve().parents[2] / "deploy" / "grafana-dashboard.json").read_text())
    wanted = {name for panel in dashboard["panels"] for target in panel["targets"]
              for name in re.findall(r"msev15_\w+", target["expr"])}
    client = await service()
    await client.post("/api/v1/chat/stream", json={"session_id": "s", "message": "where is order ORD-ZZZZ9999?"})
    await _turns_seen(client, 1)
    exported = {name for name, _ in await _samples(client)}
    exported |= {n.removesuffix("_total") + "_total" for n in exported}
    missing = sorted(n for n in wanted if n not in exported and not any(e.startswith(n) for e in exported))
    # Series that appear only once something happens: labels of events this test does not cause.
    assert set(missing) <= {"msev15_rate_limited_total", "msev15_mcp_connected"}, missing


async def test_a_chat_naming_its_tenant_in_query_and_body_counts_once(service) -> None:
    client = await service(rate_limit_per_tenant_per_minute=2)
    for i in range(2):
        resp = await client.post("/api/v1/chat", params={"tenant_id": "t"},
                                 json={"session_id": f"s{i}", "message": "hi", "tenant_id": "t"})
        assert resp.status == 200, await resp.text()
    third = await client.post("/api/v1/chat", params={"tenant_id": "t"}, json={"session_id": "s", "message": "hi"})
    assert third.status == 429
    assert_envelope(await third.json(), "tenant_rate_limited")


async def test_a_malformed_tenant_in_the_query_is_refused_and_never_counted(service) -> None:
    client = await service(rate_limit_per_tenant_per_minute=1)
    limiter = client.server.app[TENANT_LIMITER]
    for junk in ("a b", "x" * 300, "{tag}"):
        resp = await client.get("/api/v1/sessions", params={"tenant_id": junk})
        assert resp.status == 400
        assert_envelope(await resp.json(), "validation_error")
    assert len(limiter) == 0  # no window was made for any of them
    assert (await client.get("/api/v1/sessions", params={"tenant_id": "real"})).status == 200
    assert len(limiter) == 1


# --- a tenant over its limit is refused before its body is read or decoded ---------------------

_NOT_JSON = {"data": b"{not json", "headers": {"Content-Type": "application/json"}}


async def test_a_tenant_over_its_limit_is_refused_before_the_body_is_decoded(service) -> None:
    """A body that would be a 400 gets the 429: the limit was checked before any decoding."""
    client = await service(rate_limit_per_tenant_per_minute=1)
    assert (await client.get("/api/v1/sessions", params={"tenant_id": "loud"})).status == 200
    refused = await client.post("/api/v1/chat", params={"tenant_id": "loud"}, **_NOT_JSON)
    assert refused.status == 429
    assert_envelope(await refused.json(), "tenant_rate_limited")


@pytest.mark.parametrize("path", ["/api/v1/ag-ui", "/api/v1/ai-sdk/chat"])
async def test_the_protocol_routes_count_their_tenant_header_before_the_body(service, path: str) -> None:
    client = await service(rate_limit_per_tenant_per_minute=1)
    first = await client.post(path, headers={"X-Tenant-ID": "loud", "Content-Type": "application/json"},
                              data=b"{not json")
    assert first.status == 400  # counted, then refused for its body
    refused = await client.post(path, headers={"X-Tenant-ID": "loud", "Content-Type": "application/json"},
                                data=b"{not json")
    assert refused.status == 429
    assert_envelope(await refused.json(), "tenant_rate_limited")
    other = await client.post(path, headers={"X-Tenant-ID": "quiet", "Content-Type": "application/json"},
                              data=b"{not json")
    assert other.status == 400


async def test_rest_chat_ignores_a_tenant_header_it_does_not_act_for(service) -> None:
    """REST takes its tenant from the body or query: a header naming another tenant is not counted
    (it would let the body's tenant go uncounted, or spend another tenant's allowance)."""
    client = await service(rate_limit_per_tenant_per_minute=1)
    for i in range(2):
        resp = await client.post("/api/v1/chat", headers={"X-Tenant-ID": "victim"},
                                 json={"session_id": f"s{i}", "message": "hi", "tenant_id": "loud"})
        assert resp.status == (200 if i == 0 else 429)
    assert (await client.get("/api/v1/sessions", params={"tenant_id": "victim"})).status == 200
