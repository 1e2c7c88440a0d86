"""The agent-profile routes over HTTP (issue 25 item 3), on the real app and its real stores."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from tests.conftest import assert_envelope

URL = "/api/v1/agent-profile"
SECRET = "Bearer sk-live-0123456789"
PROFILE: dict[str, Any] = {
    "instructions": "You answer for Acme. Be brief.",
    "tools": {"allow": ["lookup_*", "crm_*"], "deny": ["send_email"]},
    "approval": ["crm_refund"],
    "mcp_servers": [{"name": "crm", "url": "https://crm.acme.example/mcp",
                     "headers": {"Authorization": SECRET, "X-Tenant-Key": "env:MSEV15_TENANT_SECRET_ACME"},
                     "tools": ["crm_*"]}],
    "model": {"name": "gpt-4o-mini", "api": "chat", "temperature": 0.2, "max_output_tokens": 800},
    "handoff": {"enabled": True, "timeout_seconds": 300},
    "greeting": "Hello from Acme!",
}


async def _put(client: TestClient, profile: Any, tenant: str = "acme", **headers: str) -> tuple[int, dict[str, Any]]:
    resp = await client.put(f"{URL}?tenant_id={tenant}", json=profile, headers=headers)
    return resp.status, await resp.json()


async def _get(client: TestClient, path: str = "", tenant: str = "acme") -> tuple[int, Any]:
    resp = await client.get(f"{URL}{path}?tenant_id={tenant}")
    return resp.status, (await resp.json()) if resp.status != 204 else None


def _masked_servers() -> list[dict[str, Any]]:
    server = dict(PROFILE["mcp_servers"][0])
    server["headers"] = {"Authorization": "***", "X-Tenant-Key": "env:MSEV15_TENANT_SECRET_ACME"}
    return [server]


async def test_write_read_list_roll_back_and_delete(service: Any) -> None:
    client = await service()
    status, body = await _get(client)
    assert status == 404
    assert_envelope(body, "no_profile")

    resp = await client.put(f"{URL}?tenant_id=acme", json=PROFILE)
    assert resp.status == 200 and await resp.json() == {"version": 1}
    assert resp.headers["ETag"] == '"1"'
    resp = await client.get(f"{URL}?tenant_id=acme")
    body = await resp.json()
    assert resp.status == 200 and resp.headers["ETag"] == '"1"'
    assert body["version"] == 1 and body["updated_by"] == "anonymous" and body["updated_at"].endswith("Z")
    assert body["profile"] == {**PROFILE, "mcp_servers": _masked_servers()}, "inline header values are masked"

    assert await _put(client, {"greeting": "Hi"}) == (200, {"version": 2})
    assert await _put(client, {"greeting": "Other"}, tenant="globex") == (200, {"version": 1})
    status, listed = await _get(client, "/versions")
    assert status == 200 and [v["version"] for v in listed["versions"]] == [2, 1]
    assert set(listed["versions"][0]) == {"version", "updated_at", "updated_by"}
    status, first = await _get(client, "/versions/1")
    assert status == 200 and first["profile"]["mcp_servers"] == _masked_servers()

    resp = await client.post(f"{URL}/rollback?tenant_id=acme", json={"version": 1})
    assert resp.status == 200 and await resp.json() == {"version": 3} and resp.headers["ETag"] == '"3"'
    status, body = await _get(client)
    assert body["version"] == 3 and body["profile"]["instructions"] == PROFILE["instructions"]

    resp = await client.delete(f"{URL}?tenant_id=acme")
    assert resp.status == 204
    status, body = await _get(client)
    assert status == 404 and body["error"] == "no_profile"
    assert (await client.delete(f"{URL}?tenant_id=acme")).status == 204, "deleting again changes nothing"
    status, listed = await _get(client, "/versions")
    assert [v["version"] for v in listed["versions"]] == [3, 2, 1], "history kept"
    assert (await _get(client, tenant="globex"))[1]["profile"] == {"greeting": "Other"}


async def test_every_problem_is_listed_and_no_value_is_echoed(service: Any) -> None:
    client = await service()
    bad = {
        "instructions": "x" * 32_001,
        "tools": {"allow": ["ok_*", "", "bad["], "deny": "send_email", "extra": []},
        "approval": [7],
        "mcp_servers": [
            {"name": "crm", "url": "ftp://crm.example/mcp", "headers": {"Authorization": SECRET,
                                                                       "X-Key": "env:HOME", "Bad Name": "v"}},
            {"name": "crm", "url": "https://ok.example/mcp", "token": SECRET},
        ],
        "model": {"api": "soap", "temperature": 2.5, "max_output_tokens": 0},
        "handoff": {"enabled": "yes", "timeout_seconds": 0},
        "greeting": 5,
        "colour": "blue",
    }
    resp = await client.put(f"{URL}?tenant_id=acme", json=bad)
    text = await resp.text()
    body = await resp.json()
    assert resp.status == 400
    assert_envelope(body, "validation_error")
    assert {p["field"] for p in body["problems"]} == {
        "instructions", "tools.allow[1]", "tools.allow[2]", "tools.deny", "tools.extra", "approval[0]",
        "mcp_servers[0].url", "mcp_servers[0].headers.X-Key", "mcp_servers[0].headers.Bad Name",
        "mcp_servers[1].name", "mcp_servers[1].token", "model.api", "model.temperature", "model.max_output_tokens",
        "handoff.enabled", "handoff.timeout_seconds", "greeting", "colour"}
    assert all(set(p) == {"field", "message"} and p["message"] for p in body["problems"])
    assert "sk-live" not in text and "HOME" not in text.replace("MSEV15_TENANT_SECRET_", "")
    assert (await _get(client))[0] == 404, "nothing was stored"


@pytest.mark.parametrize(("body", "content_type", "status", "error"), [
    ("[1, 2]", "application/json", 400, "validation_error"),
    ("{not json", "application/json", 400, "invalid_json"),
    ("{}", "text/plain", 415, "unsupported_media_type"),
])
async def test_a_body_that_is_not_a_json_object_is_refused(service: Any, body: str, content_type: str, status: int,
                                                           error: str) -> None:
    client = await service()
    resp = await client.put(f"{URL}?tenant_id=acme", data=body, headers={"Content-Type": content_type})
    assert resp.status == status
    assert_envelope(await resp.json(), error)


async def test_a_profile_over_the_size_bound_is_refused(service: Any) -> None:
    client = await service(max_body_bytes=2_000_000)
    huge = {"tools": {"allow": [f"tool_{i}_*" for i in range(40_000)]}}
    status, body = await _put(client, huge)
    assert status == 400 and body["problems"][0]["field"] == "profile"


async def test_if_match_makes_a_write_conditional(service: Any) -> None:
    client = await service()
    status, body = await _put(client, PROFILE, **{"If-Match": "*"})
    assert status == 412 and body["current_version"] == 0, "* needs a current profile"
    assert_envelope(body, "version_conflict")
    assert await _put(client, PROFILE, **{"If-Match": '"0"'}) == (200, {"version": 1}), '"0": only when none is'
    assert await _put(client, PROFILE, **{"If-Match": '"1"'}) == (200, {"version": 2})
    status, body = await _put(client, PROFILE, **{"If-Match": '"1"'})
    assert status == 412 and body["current_version"] == 2
    assert await _put(client, PROFILE, **{"If-Match": 'W/"2"'}) == (200, {"version": 3}), "weak: the same version"
    assert await _put(client, PROFILE, **{"If-Match": '"1", "3"'}) == (200, {"version": 4}), "a list: any of them"
    assert (await _put(client, PROFILE, **{"If-Match": '"1", "2"'}))[0] == 412
    assert await _put(client, PROFILE, **{"If-Match": "*"}) == (200, {"version": 5})
    for junk in ("5", '"five"', 'W/"', '"-1"'):
        status, body = await _put(client, PROFILE, **{"If-Match": junk})
        assert status == 400 and body["field"] == "If-Match", junk
    assert (await _get(client))[1]["version"] == 5


async def test_an_invalid_profile_is_400_whatever_if_match_says(service: Any) -> None:
    """The body is judged first: a stale or unmatched If-Match with an invalid profile is 400 with
    the problems (schemathesis: invalid input must be refused as invalid), never 412."""
    client = await service()
    assert await _put(client, PROFILE) == (200, {"version": 1})
    bad = {"approval": ["ok_*", "x" * 201]}
    for header in ('"7"', '"7", "8"', "*"):
        status, body = await _put(client, bad, **{"If-Match": header})
        assert status == 400 and body["problems"][0]["field"] == "approval[1]", (header, body)
    assert (await _put(client, PROFILE, **{"If-Match": '"7", "8"'}))[0] == 412  # a valid body: the precondition
    assert (await _get(client))[1]["version"] == 1


async def test_of_racing_conditional_writes_exactly_one_wins(service: Any) -> None:
    client = await service()
    await _put(client, PROFILE)
    results = await asyncio.gather(*[_put(client, {"greeting": f"g{i}"}, **{"If-Match": '"1"'}) for i in range(12)])
    assert sorted(status for status, _ in results) == [200] + [412] * 11
    assert (await _get(client, "/versions"))[1]["versions"][0]["version"] == 2


@pytest.mark.parametrize(("path", "body", "status", "error"), [
    ("/versions/abc", None, 400, "validation_error"),
    ("/versions/0", None, 400, "validation_error"),
    ("/versions/99", None, 404, "no_profile"),
    ("/rollback", {"version": "1"}, 400, "validation_error"),
    ("/rollback", {"version": True}, 400, "validation_error"),
    ("/rollback", {"version": 1, "also": 2}, 400, "validation_error"),
    ("/rollback", {}, 400, "validation_error"),
    ("/rollback", {"version": 99}, 404, "no_profile"),
])
async def test_bad_version_numbers(service: Any, path: str, body: Any, status: int, error: str) -> None:
    client = await service()
    await _put(client, PROFILE)
    if body is None:
        resp = await client.get(f"{URL}{path}?tenant_id=acme")
    else:
        resp = await client.post(f"{URL}{path}?tenant_id=acme", json=body)
    assert resp.status == status
    body = await resp.json()
    assert_envelope(body, error)
    if status == 404:  # the tenant has a profile (version 1): the message names the missing version only
        assert "version 99" in body["message"] and "defaults" not in body["message"]


async def test_a_change_is_logged_by_field_name_never_by_value(service: Any, caplog: pytest.LogCaptureFixture) -> None:
    client = await service()
    with caplog.at_level(logging.INFO, logger="api.profiles"):
        await _put(client, PROFILE)
        await _put(client, {**PROFILE, "greeting": "Changed", "model": {"name": "other"}})
        await client.post(f"{URL}/rollback?tenant_id=acme", json={"version": 1})
        await client.delete(f"{URL}?tenant_id=acme")
    lines = [r.getMessage() for r in caplog.records if r.name == "api.profiles"]
    assert len(lines) == 4, lines
    assert "tenant=acme version=1 by=anonymous" in lines[0]
    assert lines[0].endswith("fields=approval,greeting,handoff,instructions,mcp_servers,model,tools")
    assert lines[1].endswith("version=2 by=anonymous fields=greeting,model")
    assert "rolled back to version 1" in lines[2] and lines[2].endswith("fields=greeting,model")
    assert "deleted" in lines[3] and "version=3" in lines[3]
    everything = "\n".join(lines)
    assert "sk-live" not in everything and "Changed" not in everything and "crm.acme" not in everything


async def test_two_instances_on_redis_share_the_profile(service: Any, redis_url: str, tmp_path: Path) -> None:
    one = await service(session_store="redis", redis_url=redis_url)
    two = await service(session_store="redis", redis_url=redis_url)
    assert await _put(one, PROFILE) == (200, {"version": 1})
    status, body = await _get(two)
    assert status == 200 and body["version"] == 1 and body["profile"]["mcp_servers"] == _masked_servers()
    results = await asyncio.gather(*[_put(c, {"greeting": "x"}, **{"If-Match": '"1"'}) for c in [one, two] * 4])
    assert sorted(status for status, _ in results) == [200] + [412] * 7


async def test_if_none_match_answers_304_while_the_version_is_current(service: Any) -> None:
    client = await service()
    await _put(client, PROFILE)
    for header in ('"1"', 'W/"1"', '"7", "1"', "*"):
        resp = await client.get(f"{URL}?tenant_id=acme", headers={"If-None-Match": header})
        assert resp.status == 304 and resp.headers["ETag"] == '"1"', header
        assert await resp.read() == b""
    await _put(client, {"greeting": "Hi"})
    resp = await client.get(f"{URL}?tenant_id=acme", headers={"If-None-Match": '"1"'})
    assert resp.status == 200 and (await resp.json())["version"] == 2


async def test_delete_and_rollback_refuse_if_match_rather_than_ignore_it(service: Any) -> None:
    client = await service()
    await _put(client, PROFILE)
    resp = await client.delete(f"{URL}?tenant_id=acme", headers={"If-Match": '"1"'})
    assert resp.status == 400 and (await resp.json())["field"] == "If-Match"
    resp = await client.post(f"{URL}/rollback?tenant_id=acme", json={"version": 1}, headers={"If-Match": '"1"'})
    assert resp.status == 400 and (await resp.json())["field"] == "If-Match"
    assert (await _get(client))[1]["version"] == 1, "nothing happened"
