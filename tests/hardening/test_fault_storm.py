"""A storm of faults: 500 mixed turns while every dependency misbehaves.

The scripted model answers from a seeded random mix of text, tool calls, 429s, 500s, dropped
streams and requests that never answer (cut by ``LLM_TIMEOUT_SECONDS``); the complaints MCP server
is killed a third of the way in and restarted at two thirds; the SMTP server refuses every message.
Half the turns are streamed, half are plain JSON, over 50 sessions with bounded concurrency.

Every turn must end with a terminal outcome (a ``done``/``error`` event, or a JSON answer/envelope)
carrying a model error code, never an internal error. Afterwards the service must be back where it
started: its event loop runs as many tasks as it did when idle, nothing is in flight, each
session's history holds exactly its successful turns, and the process RSS is within 10% of its
level before the storm. The service runs on its own loop (see ``live.py``), so its tasks are
counted apart from the fakes' tasks.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from msev15.agent.context import MCP, RUNNER
from msev15.agent.tools.mailer import Mailer
from tests.complaints.server import McpTestServer, running_complaints_server
from tests.conftest import make_settings
from tests.hardening.live import LiveService, running_service
from tests.hardening.sse import data_events
from tests.llm_server import Call, Reply, ScriptedLLM
from tests.smtp_server import RecordingSMTP

SEED = 20260219
SESSIONS = 50
TURNS = 500
WARMUP_TURNS = 500
CONCURRENCY = 40
MODEL_ERRORS = {"llm_error", "llm_unavailable"}
SETTLE_SECONDS = 15.0

_COMPLAINT = Call("register_complaint", {"customer_id": "CUST-7", "description": "The parcel arrived broken."})
_EMAIL = Call("send_email", {"to": "customer@example.com", "subject": "Your complaint", "body": "We are on it."})
_ORDER = Call("get_order_by_id", {"order_id": "ORD-1A2B3C4D"})
_REPLIES: list[tuple[float, Reply]] = [  # (weight, reply)
    (35, Reply("Thanks for waiting, here is what I found for you.")),
    (12, Reply(status=429)),
    (10, Reply(status=500)),
    (4, Reply(hang=True)),
    (6, Reply("This answer is cut off before it ends", drop_after=2)),
    (12, Reply(tool_calls=[_COMPLAINT])),
    (8, Reply(tool_calls=[_EMAIL])),
    (6, Reply(tool_calls=[_ORDER])),
    (7, Reply(tool_calls=[_COMPLAINT, _EMAIL])),
]


@dataclass(frozen=True, slots=True)
class Outcome:
    session_id: str
    ok: bool
    error: str | None


def _script(rng: random.Random, count: int) -> list[Reply]:
    weights, replies = zip(*_REPLIES, strict=True)
    return rng.choices(replies, weights=weights, k=count)


def _rss_bytes() -> int:
    gc.collect()
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def _turn(http: aiohttp.ClientSession, url: str, index: int) -> Outcome:
    session_id = f"storm-{index % SESSIONS:02d}"
    body = {"session_id": session_id, "message": f"turn {index}: my parcel is broken, please help"}
    if index % 2:
        async with http.post(f"{url}/api/v1/chat/stream", json=body) as resp:
            assert resp.status == 200, await resp.text()
            text = await resp.text()
        events = data_events(text)
        terminal = [event for event in events if event["type"] in ("done", "error")]
        assert len(terminal) == 1 and terminal[0] is events[-1], (index, [e["type"] for e in events][-5:])
        last = terminal[0]
        return Outcome(session_id, last["type"] == "done", last.get("error"))
    async with http.post(f"{url}/api/v1/chat", json=body) as resp:
        answer = await resp.json()
    if resp.status == 200:
        assert answer["session_id"] == session_id and answer["message"], answer
        return Outcome(session_id, True, None)
    assert resp.status in (502, 503) and answer["request_id"] and answer["message"], (resp.status, answer)
    return Outcome(session_id, False, answer["error"])


async def _storm(url: str, turns: range, on_progress: Callable[[int], None] | None = None) -> list[Outcome]:
    """Run ``turns`` with at most CONCURRENCY in flight, over one client session closed at the end.

    A TaskGroup, so the first failed assertion cancels the other turns instead of orphaning them.
    """
    slots = asyncio.Semaphore(CONCURRENCY)
    finished = 0

    async def one(http: aiohttp.ClientSession, index: int) -> Outcome:
        nonlocal finished
        async with slots:
            outcome = await _turn(http, url, index)
        finished += 1
        if on_progress is not None:
            on_progress(finished)
        return outcome

    timeout = aiohttp.ClientTimeout(total=60)
    async with (aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), timeout=timeout) as http,
                asyncio.TaskGroup() as group):
        tasks = [group.create_task(one(http, i), name=f"storm:turn:{i}") for i in turns]
    return [task.result() for task in tasks]


class _McpChaos:
    """Kills the complaints server a third of the way through the storm, restarts it at two thirds."""

    def __init__(self, server: McpTestServer, total: int) -> None:
        self.server = server
        self.total = total
        self.kill = asyncio.Event()
        self.restart = asyncio.Event()

    def progress(self, finished: int) -> None:
        if finished >= self.total // 3:
            self.kill.set()
        if finished >= 2 * self.total // 3:
            self.restart.set()

    async def run(self) -> None:
        await self.kill.wait()
        await self.server.stop(abrupt=True)
        await self.restart.wait()
        await self.server.start()


async def _idle_state(service: LiveService) -> tuple[int, list[str], int, int, str]:
    async def read() -> tuple[int, list[str], int, int, str]:
        app = service.app
        assert app is not None
        tasks = asyncio.all_tasks()
        names = sorted(t.get_name() for t in tasks)
        return (len(tasks), names, app[RUNNER].open_turns, app[RUNNER].running,
                app[MCP]["complaints"].status)

    return await service.run(read())


async def _settle(service: LiveService, idle_tasks: int | None = None) -> tuple[int, list[str], int, int, str]:
    """Poll (bounded) until the service is idle: MCP connected, no turn, at most ``idle_tasks`` tasks."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + SETTLE_SECONDS
    while True:
        state = await _idle_state(service)
        count, _, in_flight, lanes, mcp = state
        settled = (idle_tasks is None or count <= idle_tasks) and not in_flight and not lanes and mcp == "connected"
        if settled or loop.time() > deadline:
            return state
        await asyncio.sleep(0.05)


async def _chaos_storm(service: LiveService, llm: ScriptedLLM, mcp: McpTestServer, rng: random.Random,
                      turns: range) -> list[Outcome]:
    """One storm: a fresh seeded script, the MCP server killed and restarted along the way."""
    llm.push(*_script(rng, 2 * len(turns)))
    chaos = _McpChaos(mcp, len(turns))
    chaos_task = asyncio.create_task(chaos.run(), name="storm:mcp-chaos")
    try:
        outcomes = await _storm(service.url, turns, chaos.progress)
        await asyncio.wait_for(chaos_task, SETTLE_SECONDS)
    finally:
        chaos_task.cancel()
        await asyncio.gather(chaos_task, return_exceptions=True)
    return outcomes


def _forget_test_records(llm: ScriptedLLM) -> None:
    """Drop what the scripted model records about each request, so RSS measures the service."""
    llm.requests.clear()
    llm.headers.clear()
    llm.paths.clear()


async def test_fault_storm_ends_every_turn_and_leaks_nothing(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    rng = random.Random(SEED)
    # pytest keeps every captured log record (tracebacks, frames and all) until the test ends;
    # that would show up as RSS growth that is not the service's, so only CRITICAL is captured.
    caplog.set_level(logging.CRITICAL)
    async with (ScriptedLLM(Reply("All done, anything else?")) as llm,
                RecordingSMTP(fail_first=10**9, fail_code=421) as smtp,
                running_complaints_server(tmp_path / "complaints.db") as mcp):
        settings = make_settings(
            tmp_path, llm_provider="openai", openai_base_url=f"{llm.url}/v1", llm_max_retries=0,
            llm_timeout_seconds=1.0, mcp_server_url=mcp.url, tool_timeout_seconds=2.0, agent_max_tool_rounds=3,
            # A short context: model requests reach their full size during the warm-up.
            session_max_context_messages=6,
            smtp_server=smtp.host, smtp_port=smtp.port, sender_email="shop@example.com", smtp_timeout_seconds=2.0)
        mailer = Mailer.from_settings(settings, attempts=2, base_delay=0.01)
        async with running_service(settings, mailer=mailer) as service:
            # The idle level: started, MCP connected, no client connected, no turn yet.
            idle = await _settle(service)
            assert idle[4] == "connected", idle
            idle_tasks = idle[0]

            # A first storm of the same size pays every one-time cost (allocator high-water mark,
            # imports, caches), so the RSS baseline is the service's steady state, not its cold start.
            warmup = await _chaos_storm(service, llm, mcp, rng, range(WARMUP_TURNS))
            assert (await _settle(service, idle_tasks))[0] <= idle_tasks
            _forget_test_records(llm)
            rss_before = _rss_bytes()

            outcomes = await _chaos_storm(service, llm, mcp, rng, range(WARMUP_TURNS, WARMUP_TURNS + TURNS))

            count, names, in_flight, lanes, mcp_status = await _settle(service, idle_tasks)
            assert (in_flight, lanes, mcp_status) == (0, 0, "connected")
            assert count <= idle_tasks, f"{count - idle_tasks} task(s) leaked: {names}"
            _forget_test_records(llm)
            rss_after = _rss_bytes()

            successes = Counter(o.session_id for o in warmup + outcomes if o.ok)
            failures = Counter(o.session_id for o in warmup + outcomes if not o.ok)
            async with aiohttp.ClientSession() as http:
                for i in range(SESSIONS):
                    session_id = f"storm-{i:02d}"
                    async with http.get(f"{service.url}/api/v1/sessions/{session_id}/history") as resp:
                        history = await resp.json()
                    if resp.status == 404:
                        assert not successes[session_id], history
                        continue
                    # Each successful turn adds its question and answer; a failed turn adds nothing,
                    # or, when tools completed in it, its question and a note that it stopped.
                    answers = [m["content"] for m in history["messages"] if m["role"] == "assistant"]
                    notes = [a for a in answers if a.startswith("(This answer")]
                    assert len(answers) - len(notes) == successes[session_id], (session_id, history)
                    assert len(notes) <= failures[session_id], (session_id, history)
                    roles = [m["role"] for m in history["messages"]]
                    assert roles == ["user", "assistant"] * len(answers)
            # No history was ever broken for the model (an unanswered tool call is refused with 400).
            assert llm.rejected == []
        assert mcp.store is not None
        complaints = mcp.store.search(limit=1).total

    assert len(outcomes) == TURNS
    errors = Counter(o.error for o in outcomes if not o.ok)
    assert set(errors) <= MODEL_ERRORS, errors
    # The storm really stormed: many turns failed, many succeeded, and every dependency was used.
    assert sum(errors.values()) >= TURNS // 5 and len(outcomes) - sum(errors.values()) >= TURNS // 3, errors
    assert complaints > 0
    assert smtp.attempts > 0 and not smtp.messages
    assert rss_after <= rss_before * 1.10, f"RSS grew from {rss_before >> 20} MiB to {rss_after >> 20} MiB"
