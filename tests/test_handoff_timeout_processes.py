"""The timeout ticket is exactly once across instances that die: two service processes on one
Redis, the real EscalationComms server and an SMTP sink. The instance that took the timeout is
killed (SIGKILL) the moment the store shows its lease, while its ticket email is held at the
sink; the other instance takes the work over once the lease lapses, and its sendemail carries the
same idempotency key, so the customer gets exactly one ticket (one email to them, one to the team).
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from msev15.escalation.server import EscalationServer
from msev15.store.handoffs import HandoffRecord
from msev15.store.redis_handoffs import RedisHandoffs
from tests.escalation.conftest import make_settings as escalation_settings
from tests.redis_server import RedisServer
from tests.smtp_server import RecordingSMTP
from tests.test_handoff_timeout import ASK
from tests.test_serve_process import Service, _start

pytestmark = pytest.mark.subprocess

LEASE_SECONDS = 2
DEADLINE = 30.0  # a guard against a hang, never a measure


@pytest.fixture
async def redis(tmp_path: Path) -> AsyncIterator[RedisServer]:
    async with RedisServer(tmp_path / "redis") as server:
        yield server


async def _until(what: str, check: object) -> HandoffRecord:
    """Poll the store (bounded by DEADLINE) until ``check()`` returns a record."""
    async with asyncio.timeout(DEADLINE):
        while (found := await check()) is None:  # type: ignore[operator]
            await asyncio.sleep(0.02)
    assert isinstance(found, HandoffRecord), what
    return found


async def _connected(http: aiohttp.ClientSession, service: Service) -> None:
    async with asyncio.timeout(DEADLINE):
        while True:
            checks = (await (await http.get(f"{service.url}/health/readiness")).json())["checks"]
            if checks.get("escalation_mcp") == "healthy":
                return
            await asyncio.sleep(0.05)


async def test_the_owner_dies_after_taking_the_timeout_and_exactly_one_ticket_goes_out(
        tmp_path: Path, redis: RedisServer) -> None:
    async with RecordingSMTP() as smtp:
        smtp.hold = asyncio.Event()  # the ticket's mail waits at the sink until the owner is dead
        settings = escalation_settings(tmp_path / "esc", smtp_server=smtp.host, smtp_port=smtp.port)
        async with EscalationServer(settings, host="127.0.0.1", port=0) as escalation:
            env = {"SESSION_STORE": "redis", "REDIS_URL": redis.url, "REDIS_LEASE_SECONDS": str(LEASE_SECONDS),
                   "ESCALATION_MCP_URL": escalation.url, "HANDOFF_TIMEOUT_SECONDS": "0.5"}
            instances = {}
            for name in ("a", "b"):
                (tmp_path / name).mkdir()
                service = await _start(tmp_path / name, **env)
                assert service.proc.pid is not None
                instances[service.proc.pid] = service
            store = RedisHandoffs(redis.url)
            try:
                async with aiohttp.ClientSession() as http:
                    for service in instances.values():
                        await _connected(http, service)
                    first = next(iter(instances.values()))
                    resp = await http.post(f"{first.url}/api/v1/chat", json={"session_id": "s1", "message": ASK})
                    assert (await resp.json())["status"] == "with_human"

                    async def leased() -> HandoffRecord | None:
                        record = await store.get("default", "s1")
                        return record if record is not None and record.lease_owner else None

                    taken = await _until("the timeout is taken", leased)
                    assert taken.status == "ticketed"
                    owner_pid = int((taken.lease_owner or "").split("@")[0])
                    owner = instances.pop(owner_pid)
                    owner.proc.send_signal(signal.SIGKILL)
                    await owner.proc.wait()
                    smtp.hold.set()
                    [survivor] = instances.values()

                    async def settled() -> HandoffRecord | None:
                        record = await store.get("default", "s1")
                        return record if record is not None and record.lease_owner is None else None

                    done = await _until("the survivor settles it", settled)
                    assert done.status == "ticketed" and done.ended_at == taken.ended_at
                    history = await (await http.get(f"{survivor.url}/api/v1/sessions/s1/history")).json()
                    assert history["mode"] == "agent"
                    [note] = [m["content"] for m in history["messages"] if "support ticket" in (m["content"] or "")]
                    ticket = note.split("support ticket ")[1].split(":")[0]
                    received = await smtp.wait_for(2)
                    assert len(received) == 2, received  # one ticket: the customer's copy and the team's
                    assert all(ticket.encode() in m.data for m in received)
                    assert sorted(r for m in received for r in m.rcpt_tos)[0] == "jane.doe@example.com"
                    assert smtp.attempts == 2  # nothing was sent a second time, not even refused
            finally:
                await store.close()
                for service in instances.values():
                    service.proc.send_signal(signal.SIGTERM)
                    await service.finish()
