"""Every reader gets exactly one end: the owner of a streamed turn is killed (SIGKILL) at several
points of the turn, with a reader on the owner and a reader on the other instance (both real
``msev15 serve`` processes on one redis-server). The reader that resumes on the other instance
with the last id it holds, and the one that followed there from the start, each get every later
event once and then exactly one terminal event, ``turn_lost``, within REDIS_LEASE_SECONDS + 2 s.

The kill is placed by the scripted model (a gate it waits on mid-answer) and by an SMTP server
that holds the email tool's DATA, never by sleeping."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.llm_server import Call, Reply, ScriptedLLM
from tests.redis_server import RedisServer
from tests.smtp_server import RecordingSMTP
from tests.test_serve_process import Service, _start

pytestmark = pytest.mark.subprocess

LEASE_SECONDS = 2.0
MAIL = Call("send_email", {"to": "ada@example.com", "subject": "Hi", "body": "Hello Ada"}, "mail1")


class Frames:
    """An SSE response read frame by frame as it arrives: ``(id, data)`` pairs."""

    def __init__(self, resp: aiohttp.ClientResponse) -> None:
        self.resp = resp
        self.got: list[tuple[str, dict[str, Any]]] = []
        self._id = ""

    async def until(self, count: int) -> None:
        while len(self.got) < count:
            raw = await self.resp.content.readline()
            assert raw, f"the stream ended after {self.got}"
            self._take(raw)

    async def to_end(self) -> list[tuple[str, dict[str, Any]]]:
        async for raw in self.resp.content:
            self._take(raw)
        return self.got

    def _take(self, raw: bytes) -> None:
        line = raw.decode().rstrip("\n")
        if line.startswith("id: "):
            self._id = line[4:]
        elif line.startswith("data: "):
            self.got.append((self._id, json.loads(line[6:])))


async def _stop(*services: Service) -> None:
    for service in services:
        if service.proc.returncode is None:
            service.proc.send_signal(signal.SIGTERM)
            await service.finish()


async def _found_on(http: aiohttp.ClientSession, service: Service, turn_id: str) -> None:
    """Poll (bounded) until the other instance finds the turn in the shared log."""
    deadline = time.monotonic() + 10
    while (await http.get(f"{service.url}/api/v1/sessions/s/turns/{turn_id}")).status != 200:
        assert time.monotonic() < deadline, "the turn never reached the shared log"
        await asyncio.sleep(0.02)


# point: (the model's reply, events the owner's reader has when the owner is killed)
POINTS = {
    "before_first_token": (lambda gate: Reply("one two three", gate=gate, gate_after=1), 0),
    "mid_tokens": (lambda gate: Reply("one two three", gate=gate, gate_after=3), 2),
    "during_a_tool_call": (lambda gate: Reply("Sending.", tool_calls=[MAIL], chunk_words=False), 2),
    "after_the_last_token": (lambda gate: Reply("one two three", gate=gate, gate_after=4), 3),
}


@pytest.mark.parametrize("point", list(POINTS))
async def test_a_killed_owner_leaves_every_reader_exactly_one_end(tmp_path: Path, redis: RedisServer,
                                                                   point: str) -> None:
    make_reply, seen_at_kill = POINTS[point]
    gate = asyncio.Event()
    async with ScriptedLLM() as llm, RecordingSMTP() as smtp:
        smtp.hold = asyncio.Event()  # the email tool runs until the test ends
        llm.push(make_reply(gate))
        env = {"SESSION_STORE": "redis", "REDIS_URL": redis.url, "REDIS_LEASE_SECONDS": str(LEASE_SECONDS),
               "LLM_PROVIDER": "openai", "OPENAI_BASE_URL": f"{llm.url}/v1", "LLM_MAX_RETRIES": "0",
               "SMTP_SERVER": smtp.host, "SMTP_PORT": str(smtp.port), "SENDER_EMAIL": "support@shop.test",
               "SMTP_TIMEOUT_SECONDS": "60"}
        (tmp_path / "a").mkdir()
        (tmp_path / "b").mkdir()
        a = await _start(tmp_path / "a", **env)
        b = await _start(tmp_path / "b", **env)
        try:
            async with aiohttp.ClientSession() as http:
                resp = await http.post(f"{a.url}/api/v1/chat/stream",
                                       json={"session_id": "s", "message": "email ada@example.com please"})
                turn_id = resp.headers["X-Turn-ID"]
                await _found_on(http, b, turn_id)
                follower = Frames(await http.get(f"{b.url}/api/v1/sessions/s/turns/{turn_id}/events"))
                owner_reader = Frames(resp)
                # The turn reaches the chosen point; the owner's reader has what it would have then.
                await owner_reader.until(seen_at_kill)
                if point == "during_a_tool_call":
                    await smtp.data_started.wait()
                else:
                    while len(llm.requests) < 1:  # the model answers up to its gate
                        await asyncio.sleep(0.01)
                held = [event_id for event_id, _ in owner_reader.got]
                assert held == [f"{turn_id}:{n}" for n in range(1, seen_at_kill + 1)]
                killed_at = time.monotonic()
                a.proc.send_signal(signal.SIGKILL)
                await a.proc.wait()

                headers = {"Last-Event-ID": held[-1]} if held else {}
                resumed = Frames(await http.get(f"{b.url}/api/v1/sessions/s/turns/{turn_id}/events",
                                                headers=headers))
                resumed_frames = await asyncio.wait_for(resumed.to_end(), LEASE_SECONDS + 10)
                lost_after = time.monotonic() - killed_at
                followed = await asyncio.wait_for(follower.to_end(), 10)

                lost_id = f"{turn_id}:{seen_at_kill + 1}"
                assert [(i, d["type"], d.get("error")) for i, d in resumed_frames] == [(lost_id, "error", "turn_lost")]
                assert lost_after <= LEASE_SECONDS + 2, lost_after
                ids = [i for i, _ in followed]
                assert ids == [f"{turn_id}:{n}" for n in range(1, seen_at_kill + 2)]  # each once, in order
                assert [d["type"] for _, d in followed].count("error") == 1
                assert [d for _, d in followed][:seen_at_kill] == [d for _, d in owner_reader.got]
                assert followed[-1][1]["error"] == "turn_lost"
        finally:
            gate.set()
            smtp.hold.set()
            await _stop(a, b)
