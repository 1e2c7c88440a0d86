"""Nobody comes: a handoff nobody claims within HANDOFF_TIMEOUT_SECONDS becomes one escalation
ticket (the real EscalationComms server, mail to a real SMTP sink), exactly once with two
instances on one Redis; without a ticket service the customer is told so; either way the
session goes back to the agent. Waits are on the session stream or on the sweeps' own count,
each with a bounded deadline."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient

from msev15.agent.context import MCP
from msev15.agent.handoff_timeout import TIMEOUTS, HandoffTimeouts
from msev15.escalation.server import EscalationServer
from msev15.store.handoffs import HANDOFFS
from tests.escalation.conftest import make_settings as escalation_settings
from tests.instances import two_apps
from tests.smtp_server import RecordingSMTP
from tests.test_session_stream import DEADLINE, _follow

ASK = "I want to talk to a person, I'm CUST-001 and my email is jane.doe@example.com"


async def _sweeps_pass(*clients: TestClient, rounds: int = 2) -> None:
    """Every instance completes ``rounds`` more sweeps (so each has seen the current state)."""
    targets = [c.app[TIMEOUTS].sweeps + rounds for c in clients]
    async with asyncio.timeout(DEADLINE):
        while any(c.app[TIMEOUTS].sweeps < t for c, t in zip(clients, targets, strict=True)):
            await asyncio.sleep(0.01)  # polling the sweeps' count, bounded by the deadline above


async def _history(client: TestClient, session: str = "s1") -> dict[str, Any]:
    body: dict[str, Any] = await (await client.get(f"/api/v1/sessions/{session}/history")).json()
    return body


async def test_without_a_ticket_service_the_customer_is_told_and_the_agent_takes_back(service) -> None:
    client = await service(handoff_timeout_seconds=0.2)
    stream = await _follow(client, "s1")
    resp = await client.post("/api/v1/chat", json={"session_id": "s1", "message": "I want to talk to a person"})
    assert (await resp.json())["status"] == "with_human"
    back = await stream.until("mode", mode="agent")
    assert back["by"] == {"type": "timeout"} and back["ticket_id"] is None
    assert "no support-ticket service is connected" in back["message"]
    history = await _history(client)
    assert history["mode"] == "agent" and history["messages"][-1]["content"] == back["message"]
    [record] = (await (await client.get("/api/v1/handoffs?status=all")).json())["handoffs"]
    assert record["status"] == "ticketed"
    resp = await client.post("/api/v1/chat", json={"session_id": "s1", "message": "where is my order?"})
    assert "status" not in await resp.json()  # the agent answers again
    metrics = await (await client.get("/metrics")).text()
    assert 'msev15_handoffs_total{outcome="ticketed"} 1.0' in metrics
    assert "msev15_handoff_wait_seconds_count 1.0" in metrics


async def test_a_claim_in_time_means_no_ticket(service) -> None:
    client = await service(handoff_timeout_seconds=3600)
    await client.post("/api/v1/chat", json={"session_id": "s1", "message": "I want to talk to a person"})
    assert (await client.post("/api/v1/handoffs/s1/claim")).status == 200
    app = client.app
    eager = HandoffTimeouts(app[HANDOFFS], app[TIMEOUTS].sessions, app[TIMEOUTS].events, app[TIMEOUTS].registry,
                            timeout=0)  # every handoff is overdue for this sweep
    await eager.sweep()
    assert eager.ticketed == 0
    assert (await _history(client))["mode"] == "human"


def _eager(client: TestClient) -> HandoffTimeouts:
    """Another sweeper of the instance's own parts, for which every handoff is overdue now."""
    running = client.app[TIMEOUTS]
    return HandoffTimeouts(running.handoffs, running.sessions, running.events, running.registry, timeout=0)


async def test_one_ticket_across_two_instances(aiohttp_client: Any, tmp_path: Path, redis_url: str) -> None:
    async with RecordingSMTP() as smtp:
        settings = escalation_settings(tmp_path / "esc", smtp_server=smtp.host, smtp_port=smtp.port)
        async with EscalationServer(settings, host="127.0.0.1", port=0) as escalation:
            # The instances' own sweeps wait an hour: this test races sweeps of its own instead.
            a, b = await two_apps(aiohttp_client, tmp_path, redis_url, escalation_mcp_url=escalation.url,
                                  handoff_timeout_seconds=3600)
            for client in (a, b):
                assert await client.app[MCP]["escalation"].wait_connected(10)
            stream = await _follow(b, "s1")
            resp = await a.post("/api/v1/chat", json={"session_id": "s1", "message": ASK})
            assert (await resp.json())["status"] == "with_human"
            sweepers = [_eager(c) for c in (a, b, a, b)]
            await asyncio.gather(*(s.sweep() for s in sweepers))  # four sweeps on two instances at once
            assert sum(s.ticketed for s in sweepers) == 1
            back = await stream.until("mode", mode="agent")
            ticket = back["ticket_id"]
            assert back["by"] == {"type": "timeout"} and ticket.startswith("TKT-")
            assert ticket in back["message"] and "jane.doe@example.com" in back["message"]
            await asyncio.gather(*(s.sweep() for s in sweepers))  # and again, after it was ticketed
            assert sum(s.ticketed for s in sweepers) == 1
            received = await smtp.wait_for(2)
            assert len(received) == 2  # one ticket: the customer's copy and the team's
            assert sorted(r for m in received for r in m.rcpt_tos)[0] == "jane.doe@example.com"
            assert all(ticket.encode() in m.data for m in received)
            history = await _history(a)
            assert history["mode"] == "agent" and ticket in history["messages"][-1]["content"]
            [record] = (await (await b.get("/api/v1/handoffs?status=all")).json())["handoffs"]
            assert record["status"] == "ticketed"


async def test_the_timeout_opens_a_ticket_by_itself(service, tmp_path: Path) -> None:
    async with RecordingSMTP() as smtp:
        settings = escalation_settings(tmp_path / "esc", smtp_server=smtp.host, smtp_port=smtp.port)
        async with EscalationServer(settings, host="127.0.0.1", port=0) as escalation:
            client = await service(escalation_mcp_url=escalation.url, handoff_timeout_seconds=0.2)
            assert await client.app[MCP]["escalation"].wait_connected(10)
            stream = await _follow(client, "s1")
            await client.post("/api/v1/chat", json={"session_id": "s1", "message": ASK})
            back = await stream.until("mode", mode="agent")
            assert back["ticket_id"].startswith("TKT-")
            await _sweeps_pass(client)
            assert len(await smtp.wait_for(2)) == 2 and client.app[TIMEOUTS].ticketed == 1
