"""``msev15 complaints-mcp`` (``python -m msev15.complaints``): arguments, start-up errors, signals."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import sys
from pathlib import Path

import aiohttp
import pytest

from msev15.agent.mcp_client import McpConnection
from msev15.complaints.cli import main

from .server import eventually

_LISTENING = re.compile(r"listening on (http://127\.0\.0\.1:(\d+)/mcp)")


def test_bad_port_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--port", "http"])
    assert exited.value.code == 2
    assert "--port: must be an integer between 0 and 65535, got 'http'" in capsys.readouterr().err


def test_port_in_use_exits_1_with_a_clear_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        code = main(["--port", str(port)], environ={"COMPLAINTS_DB_PATH": str(tmp_path / "env" / "c.db")})
    assert code == 1
    assert f"cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err
    assert (tmp_path / "env" / "c.db").is_file()  # the database path came from COMPLAINTS_DB_PATH


def test_unopenable_database_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "a-directory.db").mkdir()
    assert main(["--port", "0", "--db", str(tmp_path / "a-directory.db")]) == 1
    assert "cannot open complaints database" in capsys.readouterr().err


async def _read_until(stream: asyncio.StreamReader, pattern: re.Pattern[str], timeout: float) -> re.Match[str]:
    seen: list[str] = []
    async with asyncio.timeout(timeout):
        while True:
            line = (await stream.readline()).decode()
            if not line:
                raise AssertionError(f"process ended before {pattern.pattern!r}; output:\n{''.join(seen)}")
            seen.append(line)
            if match := pattern.search(line):
                return match


@pytest.mark.subprocess
async def test_serves_tools_and_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    db = tmp_path / "complaints.db"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "msev15.complaints", "--port", "0", "--db", str(db),
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "LOG_LEVEL": "INFO"},
    )
    try:
        assert proc.stderr is not None
        listening = await _read_until(proc.stderr, _LISTENING, 30.0)
        url, port = listening.groups()
        # The one log format of the three programs; the server binds no session, tenant or request.
        assert "| INFO | complaints.cli | session=- | tenant=- | req=- | complaints MCP server listening on" \
            in listening.string
        conn = McpConnection("complaints", url, backoff_initial=0.05, backoff_max=0.2)
        conn.start()
        try:
            assert await conn.wait_connected(10.0), conn.last_error
            created = await conn.call_tool("register_complaint", {"customer_id": "C1", "description": "Late"})
            assert created["status"] == "open"
            async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/health") as response:
                assert response.status == 200

            # An open listen stream must not hold the shutdown up: the server ends it when the
            # shutdown starts, so uvicorn never reaches its graceful timeout and cancels nothing.
            # The 30 s bound only keeps the test from hanging.
            proc.send_signal(signal.SIGTERM)
            async with asyncio.timeout(30.0):
                rest = (await proc.stderr.read()).decode()
                code = await proc.wait()
            assert code == 0, rest
            assert "timeout graceful shutdown exceeded" not in rest, rest
            assert "complaints MCP server stopped" in rest
            assert "Traceback" not in rest
            with pytest.raises(ConnectionRefusedError):  # nothing is left listening
                await asyncio.open_connection("127.0.0.1", int(port))
            await eventually(lambda: conn.status == "unavailable", "the client to notice the stop")
        finally:
            await conn.close()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert db.is_file()
