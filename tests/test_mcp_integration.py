"""The service with real MCP servers on loopback: complaints by chat, healing, readiness, escalation."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from msev15.agent.context import MCP, REGISTRY
from msev15.escalation.server import EscalationServer
from tests.complaints.server import eventually, running_complaints_server
from tests.conftest import matched, sse_events
from tests.escalation.conftest import make_settings as escalation_settings
from tests.smtp_server import RecordingSMTP
from tests.test_serve_process import _spawn


async def _stream(client, message: str, session: str = "s", tenant: str | None = None) -> list[dict]:
    body = {"session_id": session, "message": message} | ({"tenant_id": tenant} if tenant else {})
    resp = await client.post("/api/v1/chat/stream", json=body)
    assert resp.status == 200, await resp.text()
    return sse_events(await resp.text())


def _answer(events: list[dict]) -> str:
    return "".join(e["content"] for e in events if e["type"] == "token")


async def test_register_find_and_resolve_a_complaint_by_chat(service, tmp_path: Path) -> None:
    async with running_complaints_server(tmp_path / "complaints.db") as server:
        client = await service(mcp_server_url=server.url)
        connection = client.app[MCP]["complaints"]
        assert await connection.wait_connected(10)
        ready = await (await client.get("/health/readiness")).json()
        assert ready["checks"]["mcp_server"] == "healthy" and ready["warnings"] == []

        events = await _stream(client, "I want to register a complaint for customer CUST-001 about order "
                                       "ORD-1A2B3C4D: the parcel arrived damaged")
        call = next(e for e in events if e["type"] == "tool_call")
        assert call["name"] == "register_complaint"
        assert call["arguments"]["customer_id"] == "CUST-001" and call["arguments"]["order_id"] == "ORD-1A2B3C4D"
        assert call["arguments"]["category"] == "product"
        assert next(e for e in events if e["type"] == "tool_result")["ok"] is True
        complaint_id = matched(r"CMP-[0-9A-Z]+", _answer(events))[0]
        assert "registered your complaint" in _answer(events)

        found = await _stream(client, f"What is the status of complaint {complaint_id}?")
        assert [e["name"] for e in found if e["type"] == "tool_call"] == ["get_complaint"]
        assert "status open" in _answer(found)

        resolved = await _stream(client, f"Please resolve complaint {complaint_id}, resolution: replacement sent")
        assert [e["name"] for e in resolved if e["type"] == "tool_call"] == ["resolve_complaint"]
        assert "status resolved" in _answer(resolved)
        assert server.store is not None
        assert server.store.get(complaint_id).status == "resolved"


async def test_complaints_are_kept_apart_per_tenant(service, tmp_path: Path) -> None:
    async with running_complaints_server(tmp_path / "complaints.db") as server:
        client = await service(mcp_server_url=server.url)
        assert await client.app[MCP]["complaints"].wait_connected(10)

        registered = await _stream(client, "register a complaint for customer CUST-1: the parcel arrived damaged",
                                   tenant="acme")
        assert next(e for e in registered if e["type"] == "tool_result")["ok"] is True
        complaint_id = matched(r"CMP-[0-9A-F]{8}", _answer(registered))[0]
        own = await _stream(client, f"What is the status of complaint {complaint_id}?", tenant="acme")
        assert "status open" in _answer(own)

        # Same session id, other tenant: the model asks for the same complaint and gets nothing.
        foreign = await _stream(client, f"What is the status of complaint {complaint_id}?", tenant="globex")
        call = next(e for e in foreign if e["type"] == "tool_call")
        assert (call["name"], call["arguments"]) == ("get_complaint", {"complaint_id": complaint_id})
        assert next(e for e in foreign if e["type"] == "tool_result")["ok"] is False
        assert f"complaint {complaint_id} not found" in _answer(foreign)
        assert "damaged" not in _answer(foreign)

        searched = await _stream(client, "find complaints for customer CUST-1", tenant="globex")
        assert [e["name"] for e in searched if e["type"] == "tool_call"] == ["search_complaints"]
        assert "I found no matching complaints." in _answer(searched)
        mine = await _stream(client, "find complaints for customer CUST-1", tenant="acme")
        assert f"I found 1 complaint(s): {complaint_id} (open)" in _answer(mine)

        assert server.store is not None
        assert server.store.get(complaint_id, tenant_id="acme").customer_id == "CUST-1"
        assert server.store.search(customer_id="CUST-1").total == 0  # nor did it land in "default"


async def test_server_down_at_start_then_up(service, tmp_path: Path) -> None:
    async with running_complaints_server(tmp_path / "complaints.db", start=False) as server:
        client = await service(mcp_server_url=server.url)
        connection = client.app[MCP]["complaints"]
        await eventually(lambda: connection.status == "unavailable", "the first attempt to fail", 10)
        ready = await (await client.get("/health/readiness")).json()
        assert ready["status"] == "ready"  # not required: degrade, don't fail
        assert ready["checks"]["mcp_server"] == "unavailable"
        assert ready["warnings"] == [f"MCP server not reachable at {server.url}"]
        events = await _stream(client, "register a complaint for customer CUST-9: late delivery")
        assert "not available right now" in _answer(events) and events[-1]["type"] == "done"
        local = len(client.app[REGISTRY])

        await server.start()
        assert await connection.wait_connected(15)
        assert len(client.app[REGISTRY]) == local + 6
        ready = await (await client.get("/health/readiness")).json()
        assert ready["checks"]["mcp_server"] == "healthy"
        events = await _stream(client, "register a complaint for customer CUST-9: late delivery")
        assert [e["name"] for e in events if e["type"] == "tool_call"] == ["register_complaint"]


async def test_server_killed_mid_session_heals(service, tmp_path: Path) -> None:
    async with running_complaints_server(tmp_path / "complaints.db") as server:
        client = await service(mcp_server_url=server.url)
        connection = client.app[MCP]["complaints"]
        assert await connection.wait_connected(10)
        first = await _stream(client, "register a complaint for customer CUST-1: I was overcharged")
        assert next(e for e in first if e["type"] == "tool_result")["ok"] is True

        await server.stop(abrupt=True)
        await eventually(lambda: connection.status != "connected", "the drop to be noticed", 10)
        await server.start()
        assert await connection.wait_connected(15)
        again = await _stream(client, "register a complaint for customer CUST-1: I was overcharged again")
        assert next(e for e in again if e["type"] == "tool_result")["ok"] is True
        assert server.store is not None
        assert len(server.store.search(customer_id="CUST-1").complaints) == 2


async def test_required_mcp_makes_readiness_503(service, tmp_path: Path) -> None:
    async with running_complaints_server(tmp_path / "complaints.db", start=False) as server:
        client = await service(mcp_server_url=server.url, mcp_server_required=True)
        resp = await client.get("/health/readiness")
        assert resp.status == 503
        body = await resp.json()
        assert body["status"] == "not_ready" and body["checks"]["mcp_server"] != "healthy"
        await server.start()
        assert await client.app[MCP]["complaints"].wait_connected(15)
        assert (await client.get("/health/readiness")).status == 200


async def test_readiness_never_waits_on_a_hanging_mcp_server(service) -> None:
    # A server that accepts TCP and never answers: a readiness check that touched the network
    # would hang with it. Readiness reads the connection's state instead.
    held: list[asyncio.StreamWriter] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    silent = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = silent.sockets[0].getsockname()[1]
    try:
        client = await service(mcp_server_url=f"http://127.0.0.1:{port}/mcp")
        connection = client.app[MCP]["complaints"]
        await eventually(lambda: bool(held), "the client to connect to the silent server", 10)
        resp = await client.get("/health/readiness")
        body = await resp.json()
        assert connection.status == "connecting"  # still stuck: readiness did not wait for it
        assert resp.status == 200 and body["checks"]["mcp_server"] == "unavailable"
    finally:
        for writer in held:
            writer.close()
        silent.close()
        await silent.wait_closed()


@pytest.mark.subprocess
async def test_serve_exits_when_required_mcp_never_connects(tmp_path: Path) -> None:
    proc = await _spawn(tmp_path, MCP_SERVER_REQUIRED="true", MCP_SERVER_URL="http://127.0.0.1:9/mcp",
                        MCP_CONNECT_TIMEOUT_SECONDS="1")
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 1
    assert ("MCP server http://127.0.0.1:9/mcp is required (MCP_SERVER_REQUIRED=true) but did not connect within 1s"
            in err.decode())
    assert "Starting server" not in out.decode()


async def test_agent_opens_a_ticket_through_escalation_comms(service, tmp_path: Path) -> None:
    async with RecordingSMTP() as smtp:
        settings = escalation_settings(tmp_path / "esc", smtp_server=smtp.host, smtp_port=smtp.port)
        async with EscalationServer(settings, host="127.0.0.1", port=0) as escalation:
            # Without the live handoff (HANDOFF_ENABLED=false), asking for a person opens a ticket.
            client = await service(escalation_mcp_url=escalation.url, handoff_enabled=False)
            connection = client.app[MCP]["escalation"]
            assert await connection.wait_connected(10)
            ready = await (await client.get("/health/readiness")).json()
            assert ready["checks"]["escalation_mcp"] == "healthy"
            events = await _stream(client, "I need to speak to a human about my mortgage, customer CUST-001, "
                                           "my email is jane.doe@example.com")
            call = next(e for e in events if e["type"] == "tool_call")
            assert call["name"] == "sendemail"
            assert call["arguments"]["customer_email"] == "jane.doe@example.com"
            assert next(e for e in events if e["type"] == "tool_result")["ok"] is True
            assert "opened support ticket TKT-" in _answer(events)
            received = await smtp.wait_for(2)
            recipients = sorted(r for m in received for r in m.rcpt_tos)
            assert recipients == ["jane.doe@example.com", settings.support_team_email]
