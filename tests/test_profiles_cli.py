"""``msev15 profile``: a round trip with a running service over the same store (the API keys SQLite
file with memory sessions; the same Redis with SESSION_STORE=redis)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

URL = "/api/v1/agent-profile"
YAML_PROFILE = """\
instructions: |
  You answer for Acme Telecom. Be brief.
tools:
  allow: ["lookup_*", "crm_*"]
  deny: [send_email]
approval: [crm_refund]
mcp_servers:
  - name: crm
    url: https://crm.acme.example/mcp
    headers:
      Authorization: env:MSEV15_TENANT_SECRET_ACME_CRM
      X-Api-Key: inline-s3cret
    tools: ["crm_*"]
model: {name: gpt-4o-mini, api: chat, temperature: 0.2}
handoff: {enabled: true, timeout_seconds: 300}
greeting: Hello from Acme!
"""


async def _cli(tmp_path: Path, env: dict[str, str], *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "msev15", "profile", *args, cwd=tmp_path,
                                                env={**os.environ, **env}, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def _round_trip(client: TestClient, tmp_path: Path, env: dict[str, str]) -> None:
    (tmp_path / "acme.yaml").write_text(YAML_PROFILE)
    code, out, err = await _cli(tmp_path, env, "set", str(tmp_path / "acme.yaml"), "--tenant", "acme")
    assert code == 0, err
    assert "version 1" in out
    resp = await client.get(f"{URL}?tenant_id=acme")  # the running service reads what the CLI wrote
    body = await resp.json()
    assert resp.status == 200 and body["version"] == 1 and body["updated_by"].startswith("cli")
    assert body["profile"]["mcp_servers"][0]["headers"] == {
        "Authorization": "env:MSEV15_TENANT_SECRET_ACME_CRM", "X-Api-Key": "***"}
    assert body["profile"]["instructions"] == "You answer for Acme Telecom. Be brief.\n"

    resp = await client.put(f"{URL}?tenant_id=acme", json={"greeting": "Hi"})  # and the CLI what it wrote
    assert resp.status == 200
    code, out, err = await _cli(tmp_path, env, "show", "--tenant", "acme")
    assert code == 0 and json.loads(out) == {"greeting": "Hi"} and "version 2" in err and "anonymous" in err

    code, out, err = await _cli(tmp_path, env, "rollback", "1", "--tenant", "acme")
    assert code == 0 and "Version 3" in out, err
    code, out, err = await _cli(tmp_path, env, "show", "--tenant", "acme")
    shown = json.loads(out)
    assert shown["mcp_servers"][0]["headers"]["X-Api-Key"] == "***" and "inline-s3cret" not in out + err
    code, out, _ = await _cli(tmp_path, env, "history", "--tenant", "acme")
    rows = [line.split() for line in out.splitlines()[1:]]
    assert [row[:2] for row in rows] == [["*", "3"], ["2", rows[1][1]], ["1", rows[2][1]]], out
    assert rows[0][-1].startswith("cli") and rows[1][-1] == "anonymous"

    # Setting what `show` printed would store the mask over the secret: refused.
    (tmp_path / "shown.json").write_text(json.dumps(shown))
    code, _, err = await _cli(tmp_path, env, "set", str(tmp_path / "shown.json"), "--tenant", "acme")
    assert code == 1 and "mcp_servers[0].headers.X-Api-Key" in err and "mask" in err

    code, out, _ = await _cli(tmp_path, env, "delete", "--tenant", "acme")
    assert code == 0
    assert (await client.get(f"{URL}?tenant_id=acme")).status == 404


@pytest.mark.subprocess
async def test_round_trip_with_a_running_service_on_sqlite(service: Any, tmp_path: Path) -> None:
    keys_db = tmp_path / "config" / "api_keys.db"
    client = await service(session_store="memory", api_keys_db_path=str(keys_db))
    await _round_trip(client, tmp_path, {"SESSION_STORE": "memory", "API_KEYS_DB_PATH": str(keys_db)})


@pytest.mark.subprocess
async def test_round_trip_with_a_running_service_on_redis(service: Any, tmp_path: Path, redis_url: str) -> None:
    client = await service(session_store="redis", redis_url=redis_url)
    await _round_trip(client, tmp_path, {"SESSION_STORE": "redis", "REDIS_URL": redis_url,
                                         "API_KEYS_DB_PATH": str(tmp_path / "unused.db")})


@pytest.mark.subprocess
@pytest.mark.parametrize(("content", "name", "expected"), [
    ("a: &x [1]\nb: *x\n", "p.yaml", "aliases are not allowed"),
    ("- 1\n- 2\n", "p.yaml", "must hold one object"),
    ("{nope", "p.json", "not valid JSON"),
    ("model: {api: soap}\ncolour: blue\n", "p.yml", "model.api"),
])
async def test_a_bad_file_is_refused_with_the_reason(tmp_path: Path, content: str, name: str, expected: str) -> None:
    (tmp_path / name).write_text(content)
    code, _, err = await _cli(tmp_path, {"API_KEYS_DB_PATH": str(tmp_path / "keys.db"), "SESSION_STORE": "memory"},
                              "set", str(tmp_path / name), "--tenant", "acme")
    assert code in (1, 2) and expected in err, err
    code, _, err = await _cli(tmp_path, {"API_KEYS_DB_PATH": str(tmp_path / "keys.db"), "SESSION_STORE": "memory"},
                              "show", "--tenant", "acme")
    assert code == 1 and "defaults" in err


@pytest.mark.subprocess
async def test_rollback_to_a_version_that_does_not_exist(tmp_path: Path) -> None:
    env = {"API_KEYS_DB_PATH": str(tmp_path / "keys.db"), "SESSION_STORE": "memory"}
    code, _, err = await _cli(tmp_path, env, "rollback", "4", "--tenant", "acme")
    assert code == 1 and "no version 4" in err
    code, _, err = await _cli(tmp_path, env, "history", "--tenant", "bad tenant")
    assert code == 2 and "--tenant" in err
