"""Limits that must hold across instances, with two apps (create_app) on one real redis-server:
the failed-authentication limit per client address and the per-tenant email limit. Counted on
either instance, refused on both."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.conftest import assert_envelope
from tests.llm_server import Call, Reply, ScriptedLLM


async def test_failed_authentications_count_across_instances(pair: Any) -> None:
    a, b = await pair(auth_mode="api_key", auth_max_failures_per_minute=3)
    for client in (a, a, b):
        resp = await client.get("/api/v1/sessions", headers={"X-API-Key": "nope"})
        assert resp.status == 401
        assert_envelope(await resp.json(), "unauthorized")
    for client in (b, a):  # the third failure was on B: both instances now refuse the address
        blocked = await client.get("/api/v1/sessions", headers={"X-API-Key": "nope"})
        assert blocked.status == 429
        assert_envelope(await blocked.json(), "too_many_failed_authentications")
        assert int(blocked.headers["Retry-After"]) >= 1
    assert (await a.get("/health")).status == 200  # unprotected routes stay open


def _mail_turn(n: int) -> list[Reply]:
    mail = Call("send_email", {"to": "ada@example.com", "subject": f"Note {n}", "body": "Hello Ada"}, f"m{n}")
    return [Reply("Sending.", tool_calls=[mail]), Reply(f"Handled {n}.")]


async def test_the_per_tenant_email_limit_counts_across_instances(pair: Any, llm: ScriptedLLM,
                                                                 tmp_path: Path) -> None:
    a, b = await pair(email_max_per_tenant_per_hour=2)
    results = []
    for n, client in enumerate((a, b, a)):
        llm.push(*_mail_turn(n))
        resp = await client.post("/api/v1/chat", json={"session_id": f"s{n}", "message": "email ada@example.com"})
        assert resp.status == 200, await resp.text()
        tool_messages = [m for m in llm.requests[-1]["messages"] if m["role"] == "tool"]
        results.append(tool_messages[-1]["content"])
    assert '"sent": true' in results[0].replace('"sent":true', '"sent": true')
    assert '"sent": true' in results[1].replace('"sent":true', '"sent": true')
    assert "NOT sent" in results[2] and "at most 2 emails per hour" in results[2]
    sent = [p for name in ("a", "b") for p in (tmp_path / name / "data" / "outbox").rglob("*.eml")]
    assert len(sent) == 2
    llm.push(*_mail_turn(9))  # another tenant has its own window
    resp = await b.post("/api/v1/chat", json={"session_id": "x", "message": "email ada@example.com",
                                              "tenant_id": "other"})
    assert resp.status == 200
    assert "NOT sent" not in [m for m in llm.requests[-1]["messages"] if m["role"] == "tool"][-1]["content"]
    assert len([p for name in ("a", "b") for p in (tmp_path / name / "data" / "outbox").rglob("*.eml")]) == 3
