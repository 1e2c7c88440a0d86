"""SIGTERM to ``msev15 serve`` while 200 streams are in flight.

100 sessions each send two streamed turns at once, so every session has one turn answering and
one waiting in its lane when the signal lands. The scripted model streams slowly, and the first few
model requests hang, so those turns are still running at the shutdown deadline and are cut.
Every client must get exactly one terminal event (``done``, or ``error: shutting_down``), the
process must exit 0 with its goodbye lines and no traceback, and each session's outcome must be
consistent: the client's ``done`` events, their ``message_count`` values and the log's
"Turn completed"/"Turn failed" lines tell the same story.

How many turns finish before the deadline depends on how busy the machine is, so no share of
them is asserted. What the shutdown promises is checked against what the same run measured: a
turn ends with ``shutting_down`` only if the deadline cut it (the service's own count of cut turns
in its goodbye line, and no such event before the deadline), every other turn completes, turns
keep completing after the signal, and the process exits within the deadline plus a margin.
"""

from __future__ import annotations

import asyncio
import re
import signal
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.hardening.sse import data_events
from tests.llm_server import Reply, ScriptedLLM
from tests.test_serve_process import _start

pytestmark = pytest.mark.subprocess

SESSIONS = 100
TURNS_PER_SESSION = 2
STREAMS = SESSIONS * TURNS_PER_SESSION
HUNG = 4  # model requests that never answer: their turns are cut at the deadline
WORDS = 30
CHUNK_DELAY = 0.05  # ~1.6 s per turn, so a session's two turns need ~3 s
SHUTDOWN_TIMEOUT = 6.0
EXIT_MARGIN = 20.0  # after the deadline: cut turns end, handlers return, logs flush, stores close
DEADLINE_SLACK = 0.05  # the service arms its deadline after the signal we time, so only clock slack
_CUT = re.compile(r"\[\d+ sessions\] \((\d+) turns cut at the deadline\)")
_TURN_LINE = re.compile(r"\| session=(\S+) \| tenant=default \| req=\S+ \| Turn (completed|failed)(?: \((\d+) )?")


@dataclass(frozen=True, slots=True)
class StreamResult:
    session_id: str
    status: int
    events: list[dict[str, Any]]
    ended_at: float  # time.monotonic() when the body ended: at or after its terminal event was sent


class _InFlight:
    """Counts streams whose response has started; ``all`` is set when every one has."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.count = 0
        self.all = asyncio.Event()

    def started(self) -> None:
        self.count += 1
        if self.count == self.total:
            self.all.set()


async def _stream(http: aiohttp.ClientSession, url: str, session_id: str, gate: _InFlight) -> StreamResult:
    async with http.post(f"{url}/api/v1/chat/stream",
                         json={"session_id": session_id, "message": f"tell me a story ({session_id})"}) as resp:
        gate.started()
        body = (await resp.read()).decode()
    return StreamResult(session_id, resp.status, data_events(body), time.monotonic())


def _log_outcomes(log_text: str) -> tuple[Counter[tuple[str, str]], dict[str, list[int]]]:
    """Per (session, completed|failed) line counts, and each session's logged message counts."""
    outcomes: Counter[tuple[str, str]] = Counter()
    counts: dict[str, list[int]] = defaultdict(list)
    for match in _TURN_LINE.finditer(log_text):
        session, outcome, count = match.groups()
        outcomes[session, outcome] += 1
        if count is not None:
            counts[session].append(int(count))
    return outcomes, counts


async def test_sigterm_with_200_streams_in_flight(tmp_path: Path) -> None:
    async with ScriptedLLM(Reply(" ".join(f"w{i}" for i in range(WORDS)), delay=CHUNK_DELAY)) as llm:
        llm.push(*(Reply(hang=True) for _ in range(HUNG)))
        service = await _start(tmp_path, LLM_PROVIDER="openai", OPENAI_BASE_URL=f"{llm.url}/v1", LLM_MAX_RETRIES="0",
                               SHUTDOWN_TIMEOUT_SECONDS=str(SHUTDOWN_TIMEOUT),
                               # One tenant on purpose: this is about shutdown, not fairness.
                               AGENT_MAX_CONCURRENT_TURNS_PER_TENANT="100", AGENT_MAX_QUEUED_TURNS_PER_TENANT="1000")
        gate = _InFlight(STREAMS)
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as http:
            tasks = [asyncio.create_task(_stream(http, service.url, f"load-{i:03d}", gate))
                     for i in range(SESSIONS) for _ in range(TURNS_PER_SESSION)]
            try:
                await asyncio.wait_for(gate.all.wait(), 30)
                signalled_at = time.monotonic()
                service.proc.send_signal(signal.SIGTERM)
                # Bounds so the test cannot hang; a stream still open here fails it.
                results = await asyncio.wait_for(asyncio.gather(*tasks), SHUTDOWN_TIMEOUT + EXIT_MARGIN)
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
        code, out, err = await service.finish(timeout=SHUTDOWN_TIMEOUT + EXIT_MARGIN)
        exited_after = time.monotonic() - signalled_at
    log_text = (tmp_path / "logs" / "app.log").read_text()

    assert code == 0, err
    assert "Server stopped gracefully. Goodbye!" in out
    assert exited_after < SHUTDOWN_TIMEOUT + EXIT_MARGIN, exited_after
    cut_line = _CUT.search(out)
    assert cut_line, out  # the hung turns at least were open at the deadline
    cut = int(cut_line.group(1))
    assert "Traceback" not in err and "Traceback" not in log_text

    terminals: Counter[str] = Counter()
    done_counts: dict[str, list[int]] = defaultdict(list)
    errors: dict[str, int] = Counter()
    done_after_signal = 0
    for result in results:
        assert result.status == 200
        kinds = [event["type"] for event in result.events]
        assert sum(kind in ("done", "error") for kind in kinds) == 1, (result.session_id, kinds[-5:])
        last = result.events[-1]
        assert last["type"] in ("done", "error") and last["session_id"] == result.session_id
        terminals[last["type"]] += 1
        if last["type"] == "done":
            done_counts[result.session_id].append(last["message_count"])
            done_after_signal += result.ended_at > signalled_at
        else:
            assert last["error"] == "shutting_down", last
            # Cut at the deadline, never earlier: the signal alone stops no accepted turn.
            assert result.ended_at - signalled_at >= SHUTDOWN_TIMEOUT - DEADLINE_SLACK, result.ended_at - signalled_at
            errors[result.session_id] += 1
    assert terminals["done"] + terminals["error"] == STREAMS
    # Exactly the turns the service cut got ``shutting_down``; every other accepted turn completed.
    assert terminals["error"] == cut >= HUNG, (terminals, cut)
    assert done_after_signal > 0, terminals  # in-flight turns went on answering after the signal

    logged, logged_counts = _log_outcomes(log_text)
    assert log_text.count("User message received") == STREAMS
    for i in range(SESSIONS):
        session = f"load-{i:03d}"
        done = sorted(done_counts[session])
        # Turns of a session commit whole and in order: a cut turn leaves nothing behind,
        # so completed turns count 2, then 4 messages, whichever stream they belonged to.
        assert done == [2, 4][: len(done)], (session, done)
        assert len(done) + errors[session] == TURNS_PER_SESSION
        assert logged[session, "completed"] == len(done) and logged[session, "failed"] == errors[session]
        assert sorted(logged_counts[session]) == done
