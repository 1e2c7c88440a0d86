"""MCP_AUTH_TOKEN: the complaints and escalation servers refuse every HTTP request without the
bearer token (401, before any MCP processing), the service's MCP client sends it, and a server
on a non-loopback address without a token refuses to start."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import aiohttp
import pytest

from msev15.agent.context import MCP
from msev15.agent.mcp_client import McpConnection
from msev15.app import create_app
from msev15.escalation.server import EscalationServer
from msev15.mcpkit.auth import bind_refusal
from tests.complaints.server import running_complaints_server
from tests.conftest import make_settings
from tests.escalation.conftest import make_settings as escalation_settings

TOKEN = "complaints-token-3b9f0c"
ESC_TOKEN = "escalation-token-81d2aa"
INIT = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}
MCP_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


async def _post(url: str, headers: dict[str, str]) -> tuple[int, dict[str, str], str]:
    async with aiohttp.ClientSession() as session, session.post(url, json=INIT,
                                                                headers={**MCP_HEADERS, **headers}) as resp:
        return resp.status, dict(resp.headers), await resp.text()


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN},
                                     {"Authorization": f"Basic {TOKEN}"}, {"X-API-Key": TOKEN}])
async def test_complaints_server_refuses_requests_without_the_token(tmp_path: Path, headers: dict[str, str]) -> None:
    async with running_complaints_server(tmp_path / "c.db", auth_token=TOKEN) as server:
        status, got, body = await _post(server.url, headers)
        assert status == 401
        assert got["WWW-Authenticate"].startswith("Bearer")
        assert "unauthorized" in body and TOKEN not in body


async def test_complaints_server_serves_requests_with_the_token(tmp_path: Path) -> None:
    async with running_complaints_server(tmp_path / "c.db", auth_token=TOKEN) as server:
        status, _, body = await _post(server.url, {"Authorization": f"Bearer {TOKEN}"})
        assert status == 200, body
        async with aiohttp.ClientSession() as session, session.get(server.base_url + "/health") as resp:
            assert resp.status == 200  # probes stay open: no tenant data there


async def test_without_a_token_configured_the_server_is_open_as_before(tmp_path: Path) -> None:
    async with running_complaints_server(tmp_path / "c.db") as server:
        status, _, _ = await _post(server.url, {})
        assert status == 200


async def test_the_mcp_client_sends_the_token(tmp_path: Path) -> None:
    async with running_complaints_server(tmp_path / "c.db", auth_token=TOKEN) as server:
        with_token = McpConnection("complaints", server.url, auth_token=TOKEN, call_timeout=5)
        without = McpConnection("complaints", server.url, call_timeout=5, backoff_initial=0.05, backoff_max=0.1)
        with_token.start()
        without.start()
        try:
            assert await with_token.wait_connected(10)
            assert {t.name for t in with_token.tools()} >= {"register_complaint", "get_complaint"}
            result = await with_token.call_tool("register_complaint", {
                "customer_id": "CUST-1", "description": "Parcel arrived broken", "category": "product",
                "priority": "high"}, tenant_id="acme")
            assert result["id"].startswith("CMP-")
            assert server.store is not None and server.store.get(result["id"], tenant_id="acme")
            assert not await without.wait_connected(0.5)
            assert without.status == "unavailable" and without.last_error
        finally:
            await with_token.close()
            await without.close()


async def test_the_service_reaches_token_guarded_servers(tmp_path: Path, aiohttp_client) -> None:
    """Complaints with MCP_AUTH_TOKEN, escalation with its own ESCALATION_MCP_AUTH_TOKEN."""
    esc = escalation_settings(tmp_path / "esc", mcp_auth_token=ESC_TOKEN)
    async with running_complaints_server(tmp_path / "c.db", auth_token=TOKEN) as complaints, \
            EscalationServer(esc) as escalation:
        status, _, _ = await _post(escalation.url, {"Authorization": f"Bearer {TOKEN}"})
        assert status == 401  # the complaints token does not open the escalation server
        settings = make_settings(tmp_path, mcp_server_url=complaints.url, mcp_auth_token=TOKEN,
                                 escalation_mcp_url=escalation.url, escalation_mcp_auth_token=ESC_TOKEN)
        client = await aiohttp_client(await create_app(settings))
        connections = client.app[MCP]
        assert await connections["complaints"].wait_connected(10)
        assert await connections["escalation"].wait_connected(10)
        assert "sendemail" in {t.name for t in connections["escalation"].tools()}


async def test_the_service_without_the_token_cannot_use_a_guarded_server(tmp_path: Path, aiohttp_client) -> None:
    async with running_complaints_server(tmp_path / "c.db", auth_token=TOKEN) as complaints:
        client = await aiohttp_client(await create_app(make_settings(tmp_path, mcp_server_url=complaints.url)))
        assert not await client.app[MCP]["complaints"].wait_connected(1)


# --- start-up refusal ---------------------------------------------------------------------


@pytest.mark.parametrize(("host", "token", "allow", "refused"), [
    ("0.0.0.0", "", False, True), ("::", "", False, True), ("10.1.2.3", "", False, True),
    ("0.0.0.0", "t", False, False), ("0.0.0.0", "", True, False),
    ("127.0.0.1", "", False, False), ("::1", "", False, False), ("localhost", "", False, False)])
def test_bind_refusal(host: str, token: str, allow: bool, refused: bool) -> None:
    reason = bind_refusal(host, token, allow)
    assert (reason is not None) == refused
    if reason:
        assert "MCP_AUTH_TOKEN" in reason and "MCP_ALLOW_UNAUTHENTICATED" in reason


async def _cli(*args: str, **env: str) -> tuple[int, str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("MCP_")}
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "msev15", *args, env={**environ, **env},
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, err.decode()


@pytest.mark.subprocess
async def test_complaints_server_refuses_to_start_on_every_interface_without_a_token(tmp_path: Path) -> None:
    code, err = await _cli("complaints-mcp", "--host", "0.0.0.0", "--port", "0", "--db", str(tmp_path / "c.db"))
    assert code == 2
    assert "refusing to listen on 0.0.0.0 without MCP_AUTH_TOKEN" in err


@pytest.mark.subprocess
async def test_escalation_server_refuses_to_start_on_every_interface_without_a_token(tmp_path: Path) -> None:
    code, err = await _cli("escalation-mcp", "--host", "0.0.0.0", "--port", "0",
                           ESCALATION_DB_PATH=str(tmp_path / "e.db"), EMAIL_OUTBOX_DIR=str(tmp_path / "outbox"))
    assert code == 1
    assert "refusing to listen on 0.0.0.0 without MCP_AUTH_TOKEN" in err
    assert not (tmp_path / "e.db").exists()  # refused before opening anything


async def test_escalation_server_starts_on_every_interface_with_a_token(tmp_path: Path) -> None:
    settings = escalation_settings(tmp_path, host="0.0.0.0", mcp_auth_token=ESC_TOKEN)
    async with EscalationServer(settings) as server:
        status, _, _ = await _post(server.url, {})
        assert status == 401
        status, _, _ = await _post(server.url, {"Authorization": f"Bearer {ESC_TOKEN}"})
        assert status == 200


def test_the_complaints_server_binds_loopback_by_default() -> None:
    from msev15.complaints.cli import DEFAULT_HOST
    assert DEFAULT_HOST == "127.0.0.1"


# --- guessing the token is throttled; the open /health keeps its details for token holders -----

async def test_guessing_the_complaints_token_is_throttled_per_address(tmp_path: Path) -> None:
    from msev15.mcpkit.auth import MAX_FAILURES_PER_MINUTE

    async with running_complaints_server(tmp_path / "c.db", auth_token=TOKEN) as server:
        statuses = [(await _post(server.url, {"Authorization": f"Bearer guess-{n}"}))[0]
                    for n in range(MAX_FAILURES_PER_MINUTE + 3)]
        assert statuses == [401] * MAX_FAILURES_PER_MINUTE + [429] * 3
        status, headers, body = await _post(server.url, {"Authorization": f"Bearer {TOKEN}"})
        # Refused before the token is compared: a right guess looks like a wrong one while blocked.
        assert status == 429 and int(headers["Retry-After"]) >= 1
        assert "too_many_failed_authentications" in body and TOKEN not in body


async def test_guessing_the_escalation_token_is_throttled(tmp_path: Path) -> None:
    from msev15.mcpkit.auth import MAX_FAILURES_PER_MINUTE

    async with EscalationServer(escalation_settings(tmp_path, mcp_auth_token=ESC_TOKEN)) as server:
        for _ in range(MAX_FAILURES_PER_MINUTE):
            assert (await _post(server.url, {}))[0] == 401
        assert (await _post(server.url, {"Authorization": f"Bearer {ESC_TOKEN}"}))[0] == 429


async def test_a_wrong_token_on_the_open_health_is_not_a_guess(tmp_path: Path) -> None:
    from msev15.mcpkit.auth import MAX_FAILURES_PER_MINUTE

    async with running_complaints_server(tmp_path / "c.db", auth_token=TOKEN) as server:
        async with aiohttp.ClientSession() as session:
            for _ in range(MAX_FAILURES_PER_MINUTE + 1):
                async with session.get(server.base_url + "/health", headers={"Authorization": "Bearer x"}) as resp:
                    assert resp.status == 200
        assert (await _post(server.url, {"Authorization": f"Bearer {TOKEN}"}))[0] == 200


async def _health(server: EscalationServer, headers: dict[str, str]) -> dict[str, object]:
    async with aiohttp.ClientSession() as session, session.get(server.base_url + "/health", headers=headers) as resp:
        assert resp.status == 200
        body: dict[str, object] = await resp.json()
        return body


async def test_escalation_health_shows_details_only_to_token_holders(tmp_path: Path) -> None:
    from tests.escalation.conftest import uc2_args

    settings = escalation_settings(tmp_path, mcp_auth_token=ESC_TOKEN)
    async with EscalationServer(settings) as server:
        connection = McpConnection("escalation", server.url, auth_token=ESC_TOKEN, call_timeout=10)
        connection.start()
        try:
            assert await connection.wait_connected(10)
            sent = await connection.call_tool("sendemail", uc2_args(), tenant_id="acme")
        finally:
            await connection.close()
        email_id = sent["email_id"]
        outbox = str(settings.email_outbox_dir)
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            public = await _health(server, headers)
            assert public["status"] == "ok" and public["database"] == "ok"
            text = json.dumps(public)
            assert outbox not in text and email_id not in text and "last_delivery" not in public
            assert "backend_detail" not in public
        private = await _health(server, {"Authorization": f"Bearer {ESC_TOKEN}"})
        assert outbox in json.dumps(private)
        assert private["last_delivery"]["email_id"] == email_id  # type: ignore[index]
