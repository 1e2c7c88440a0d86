"""`msev15 serve` as a real subprocess: banner, signals, draining, the goodbye lines."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from tests.complaints.server import eventually
from tests.conftest import sse_events
from tests.llm_server import Reply, ScriptedLLM

pytestmark = pytest.mark.subprocess

GOODBYE = [
    "  • Closing active sessions... [",
    "  • Flushing logs...",
    "  • Closing database connections...",
    "  • Cleanup complete.",
    "Server stopped gracefully. Goodbye!",
]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Service:
    def __init__(self, proc: asyncio.subprocess.Process, port: int) -> None:
        self.proc = proc
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.stdout: list[str] = []

    async def read_until(self, marker: str, timeout: float = 20) -> None:
        stdout = self.proc.stdout
        assert stdout is not None
        deadline = time.monotonic() + timeout
        while not any(marker in line for line in self.stdout):
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"{marker!r} not printed; got {self.stdout}"
            line = await asyncio.wait_for(stdout.readline(), remaining)
            assert line, f"process ended before {marker!r}: {self.stdout}"
            self.stdout.append(line.decode().rstrip("\n"))

    async def finish(self, timeout: float = 30) -> tuple[int, str, str]:
        """Exit code, all of stdout and stderr once the process ends. ``timeout`` only guards
        against a hang (the process is killed then): it is no measure of how fast it stopped."""
        try:
            out, err = await asyncio.wait_for(self.proc.communicate(), timeout)
        except TimeoutError:
            self.proc.kill()
            await self.proc.communicate()
            raise AssertionError(f"still running {timeout}s after being told to stop; stdout: {self.stdout}") from None
        self.stdout += out.decode().splitlines()
        assert self.proc.returncode is not None
        return self.proc.returncode, "\n".join(self.stdout), err.decode()


async def _spawn(tmp_path: Path, **env: str) -> asyncio.subprocess.Process:
    """``msev15 serve`` with hermetic settings (files under tmp_path, no MCP, no log file)."""
    environ = {**os.environ, "SERVER_HOST": "127.0.0.1", "SERVER_PORT": str(_free_port()), "MCP_SERVER_URL": "",
               "LOG_TO_FILE": "false", "ORDER_DB_PATH": str(tmp_path / "orders.db"),
               "EMAIL_OUTBOX_DIR": str(tmp_path / "outbox"), **env}
    return await asyncio.create_subprocess_exec(sys.executable, "-m", "msev15", "serve", cwd=tmp_path, env=environ,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)


async def _start(tmp_path: Path, **env: str) -> Service:
    port = _free_port()
    proc = await _spawn(tmp_path, **{
        "SERVER_PORT": str(port), "LOG_TO_FILE": "true", "LOG_FILE_PATH": str(tmp_path / "logs" / "app.log"),
        "LLM_PROVIDER": "offline", "SHUTDOWN_TIMEOUT_SECONDS": "10", **env})
    service = Service(proc, port)
    try:
        await service.read_until("API Documentation:")
    except BaseException:
        proc.kill()
        await proc.communicate()
        raise
    return service


# A drain deadline no test waits for: a service that exits at all did not wait for it.
HOUR = "3600"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_signal_stops_gracefully_with_goodbye_lines(tmp_path: Path, sig: signal.Signals) -> None:
    """With nothing in flight the drain ends at once: the deadline is an hour away, so a drain
    that waited for it would hit finish()'s guard instead of printing the goodbye lines."""
    service = await _start(tmp_path, SHUTDOWN_TIMEOUT_SECONDS=HOUR)
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{service.url}/api/v1/chat", json={"session_id": "a", "message": "hello"}) as resp:
            assert resp.status == 200
        async with http.get(f"{service.url}/docs") as resp:
            assert resp.status == 200
    service.proc.send_signal(sig)
    code, out, err = await service.finish()
    assert code == 0, err
    first = "^C Shutdown signal received..." if sig == signal.SIGINT else "Shutdown signal received (SIGTERM)..."
    lines = out.splitlines()
    at = lines.index(first)
    assert [line[: len(g)] for line, g in zip(lines[at + 1:], GOODBYE, strict=False)] == GOODBYE
    assert lines[at + 1].endswith("[1 sessions]")  # nothing was cut at a deadline
    assert "Traceback" not in err
    assert "User message received" in (tmp_path / "logs" / "app.log").read_text()


async def test_banner_shows_real_values_and_warnings(tmp_path: Path) -> None:
    port = _free_port()
    service = await _start(tmp_path, MCP_SERVER_URL=f"http://127.0.0.1:{port}/mcp", LLM_PROVIDER="auto",
                           ENABLE_RATE_LIMITING="true", RATE_LIMIT_PER_MINUTE="42", CORS_ORIGINS="https://a.example.com")
    service.proc.send_signal(signal.SIGTERM)
    code, out, _ = await service.finish()
    assert code == 0
    assert "║                    MSEv15E2E Service                         ║" in out
    assert f"  • Port: {service.port}" in out
    assert "  • CORS: Enabled (https://a.example.com)" in out
    assert "  • Rate Limiting: Enabled (42/min per IP)" in out
    assert "  • Model: offline assistant (built in, no network)" in out
    assert f"  • MCP Server: http://127.0.0.1:{port}/mcp [⚠ Unavailable]" in out
    assert "No language model configured" in out
    tools_line = next(line for line in out.splitlines() if line.startswith("  • Tools: "))
    assert tools_line == "  • Tools: 12 (MCP 0 + Local 12)"  # orders 6, email 5, handoff_to_human
    assert "Starting server... ✓" in out and f"http://127.0.0.1:{service.port}/docs" in out


async def test_stream_in_flight_gets_done_before_exit(tmp_path: Path) -> None:
    async with ScriptedLLM() as llm:
        llm.default = Reply(" ".join(f"w{i}" for i in range(30)), delay=0.05)
        service = await _start(tmp_path, LLM_PROVIDER="openai", OPENAI_BASE_URL=f"{llm.url}/v1")
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{service.url}/api/v1/chat/stream",
                                 json={"session_id": "s", "message": "talk"}) as resp:
                first = await resp.content.readline()
                assert first.startswith(b"id: ")
                service.proc.send_signal(signal.SIGTERM)
                rest = (await resp.read()).decode()
        events = sse_events(first.decode() + rest)
        code, out, err = await service.finish()
    assert events[-1]["type"] == "done" and events[-1]["message_count"] == 2
    assert [e["type"] for e in events].count("done") == 1
    assert code == 0, err
    assert "Server stopped gracefully. Goodbye!" in out


async def test_turn_cut_at_the_deadline_ends_with_shutting_down(tmp_path: Path) -> None:
    """A turn that does not end is given SHUTDOWN_TIMEOUT_SECONDS, then cut by the deadline: its
    reader gets the one error event, and the goodbye lines say one turn was cut at the deadline."""
    timeout = 1.0
    async with ScriptedLLM() as llm:
        llm.default = Reply(hang=True)
        service = await _start(tmp_path, LLM_PROVIDER="openai", OPENAI_BASE_URL=f"{llm.url}/v1",
                               SHUTDOWN_TIMEOUT_SECONDS=str(timeout))
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{service.url}/api/v1/chat/stream",
                                 json={"session_id": "s", "message": "talk"}) as resp:
                assert resp.status == 200
                await eventually(lambda: len(llm.requests) == 1, "the model to be asked")  # it hangs there
                signalled = time.monotonic()
                service.proc.send_signal(signal.SIGTERM)
                body = (await resp.read()).decode()
                waited = time.monotonic() - signalled
        code, out, err = await service.finish()
    events = sse_events(body)
    assert events == [{"type": "error", "error": "shutting_down", "message": events[0]["message"],
                       "request_id": events[0]["request_id"], "session_id": "s", "turn_id": resp.headers["X-Turn-ID"]}]
    # Not cut before its deadline. A lower bound only: load can stretch it, never shorten it. That
    # the cut came from the deadline (and not from a later backstop) the goodbye line says.
    assert waited >= timeout
    assert code == 0, err
    lines = out.splitlines()
    at = lines.index("Shutdown signal received (SIGTERM)...")
    assert lines[at + 1].startswith("  • Closing active sessions... [") and lines[at + 1].endswith(
        "] (1 turns cut at the deadline)")
    assert lines[-1] == "Server stopped gracefully. Goodbye!"


async def test_shutdown_ends_resumed_and_replaying_readers_with_one_terminal_event(tmp_path: Path) -> None:
    """A turn with three readers at SIGTERM: its first stream, a reader that resumed it with
    Last-Event-ID, and one replaying it from the start. Each gets the turn's one terminal event."""
    async with ScriptedLLM() as llm:
        gate = asyncio.Event()
        llm.default = Reply("one two three four five six", gate=gate, gate_after=3)
        service = await _start(tmp_path, LLM_PROVIDER="openai", OPENAI_BASE_URL=f"{llm.url}/v1",
                               SHUTDOWN_TIMEOUT_SECONDS="1")
        async with aiohttp.ClientSession() as http:
            first = await http.post(f"{service.url}/api/v1/chat/stream", json={"session_id": "s", "message": "hi"})
            turn_id = first.headers["X-Turn-ID"]
            head = [await first.content.readline() for _ in range(3)]  # id, data, blank: event 1
            assert head[0].decode().strip() == f"id: {turn_id}:1"
            events_url = f"{service.url}/api/v1/sessions/s/turns/{turn_id}/events"
            resumed = await http.get(events_url, headers={"Last-Event-ID": f"{turn_id}:1"})
            replay = await http.get(events_url)
            assert resumed.status == replay.status == 200
            service.proc.send_signal(signal.SIGTERM)  # the model stays held: the deadline cuts the turn
            bodies = [(b"".join(head) + await first.read()).decode(), (await resumed.read()).decode(),
                      (await replay.read()).decode()]
            gate.set()
        code, out, err = await service.finish()
    for body in bodies:
        events = sse_events(body)
        terminal = [e for e in events if e["type"] in ("done", "error")]
        assert len(terminal) == 1 and terminal[0] is events[-1], events
        assert terminal[0]["error"] == "shutting_down" and terminal[0]["turn_id"] == turn_id
    assert [e["content"] for e in sse_events(bodies[1]) if e["type"] == "token"] == ["two "]  # after seq 1 only
    assert code == 0, err
    assert "Server stopped gracefully. Goodbye!" in out


async def test_second_signal_exits_at_once(tmp_path: Path) -> None:
    """A turn whose model does not answer (for minutes) and an hour's drain deadline: within
    finish()'s guard only the second signal can end the process, and it ends it without draining
    (no goodbye lines, exit code 128 + the signal)."""
    async with ScriptedLLM() as llm:
        llm.default = Reply(hang=True)
        service = await _start(tmp_path, LLM_PROVIDER="openai", OPENAI_BASE_URL=f"{llm.url}/v1",
                               SHUTDOWN_TIMEOUT_SECONDS=HOUR)
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{service.url}/api/v1/chat/stream",
                                 json={"session_id": "s", "message": "talk"}) as resp:
                assert resp.status == 200
                await eventually(lambda: len(llm.requests) == 1, "the model to be asked")  # it hangs there
                service.proc.send_signal(signal.SIGTERM)
                await service.read_until("Shutdown signal received")
                service.proc.send_signal(signal.SIGTERM)
                code, out, err = await service.finish()
    assert code == 128 + signal.SIGTERM
    assert "Second signal (SIGTERM) during shutdown: exiting now without draining." in err
    assert "Closing active sessions" not in out and "Goodbye" not in out


async def test_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = await _spawn(tmp_path, SERVER_PORT=str(port))
        _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in err.decode()


async def test_while_draining_new_chats_get_503_and_readiness_says_not_ready(tmp_path: Path) -> None:
    async with ScriptedLLM() as llm:
        llm.default = Reply(" ".join(f"w{i}" for i in range(40)), delay=0.05)
        service = await _start(tmp_path, LLM_PROVIDER="openai", OPENAI_BASE_URL=f"{llm.url}/v1")
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{service.url}/api/v1/chat/stream",
                                 json={"session_id": "s", "message": "talk"}) as stream:
                assert (await stream.content.readline()).startswith(b"id: ")
                service.proc.send_signal(signal.SIGTERM)
                await service.read_until("Shutdown signal received")
                # Still listening: load balancers are told, not refused.
                async with http.post(f"{service.url}/api/v1/chat", json={"session_id": "t", "message": "hi"}) as late:
                    assert late.status == 503
                    body = await late.json()
                    assert body["error"] == "shutting_down" and late.headers["Retry-After"] == "5"
                async with http.get(f"{service.url}/health/readiness") as ready:
                    assert ready.status == 503 and (await ready.json())["status"] == "not_ready"
                rest = (await stream.read()).decode()
        code, _out, err = await service.finish()
    assert '"type": "done"' in rest.strip().splitlines()[-1]
    assert code == 0, err


async def test_failed_start_up_exits_instead_of_hanging(tmp_path: Path) -> None:
    not_a_db = tmp_path / "orders.db"
    not_a_db.write_text("this is not a database\n" * 100)
    proc = await _spawn(tmp_path, ORDER_DB_PATH=str(not_a_db))
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 1
    assert "Error: the service could not start:" in err.decode() and "order database" in err.decode()


async def test_signal_while_waiting_for_a_required_mcp_server(tmp_path: Path) -> None:
    port = _free_port()
    proc = await _spawn(tmp_path, SERVER_PORT=str(port), MCP_SERVER_REQUIRED="true",
                        MCP_SERVER_URL=f"http://127.0.0.1:{_free_port()}/mcp", MCP_CONNECT_TIMEOUT_SECONDS="300")
    async with aiohttp.ClientSession() as http:
        deadline = time.monotonic() + 20
        while True:  # bounded poll until the port answers: readiness is not_ready meanwhile
            try:
                async with http.get(f"http://127.0.0.1:{port}/health/readiness") as ready:
                    assert ready.status == 503
                    break
            except aiohttp.ClientConnectionError:
                assert time.monotonic() < deadline, "the service never started listening"
                await asyncio.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, err = await asyncio.wait_for(proc.communicate(), 15)  # not the 300 s MCP wait
    assert proc.returncode == 0, err.decode()
    assert "Server stopped gracefully. Goodbye!" in out.decode()
