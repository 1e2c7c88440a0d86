"""`msev15 serve --with-reference-servers`: the two reference MCP servers as supervised children."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import sys
from collections.abc import Callable
from pathlib import Path

import aiohttp
import psutil
import pytest

from tests.complaints.server import eventually
from tests.test_serve_process import GOODBYE, Service, _free_port, _start

pytestmark = pytest.mark.subprocess


def _child_pids(out: list[str]) -> dict[str, int]:
    found = {}
    for line in out:
        match = re.match(r"  • (Complaints MCP|Escalation MCP): http://127\.0\.0\.1:\d+/mcp \(pid (\d+),", line)
        if match:
            found[match[1]] = int(match[2])
    return found


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _stopped(pid: int) -> Callable[[], bool]:
    return lambda: not _alive(pid)


async def _start_with_servers(tmp_path: Path, **extra: str) -> Service:
    port = _free_port()
    environ = {**os.environ, **extra, "SERVER_HOST": "127.0.0.1", "SERVER_PORT": str(port), "LOG_TO_FILE": "false",
               "LLM_PROVIDER": "offline", "ORDER_DB_PATH": str(tmp_path / "orders.db"),
               "EMAIL_OUTBOX_DIR": str(tmp_path / "outbox"), "SHUTDOWN_TIMEOUT_SECONDS": "10"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "msev15", "serve", "--with-reference-servers", cwd=tmp_path, env=environ,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    service = Service(proc, port)
    try:
        await service.read_until("Supervised reference servers:", timeout=60)
        while not any(line.startswith("  • Token: ") for line in service.stdout):
            line = await asyncio.wait_for(proc.stdout.readline(), 10)  # type: ignore[union-attr]
            assert line, service.stdout
            service.stdout.append(line.decode().rstrip("\n"))
    except BaseException:
        proc.kill()
        await proc.communicate()
        raise
    return service


async def test_serve_runs_restarts_and_stops_the_reference_servers(tmp_path: Path) -> None:
    service = await _start_with_servers(tmp_path)
    try:
        pids = _child_pids(service.stdout)
        assert set(pids) == {"Complaints MCP", "Escalation MCP"}, service.stdout
        banner = "\n".join(service.stdout)
        assert re.search(r"MCP Server: http://127\.0\.0\.1:\d+/mcp \[✓ Connected\]", banner), banner
        assert re.search(r"Escalation MCP: http://127\.0\.0\.1:\d+/mcp \[✓ Connected\]", banner), banner
        assert f"Playground: http://127.0.0.1:{service.port}/" in banner
        async with aiohttp.ClientSession() as http:
            # The agent has the complaints tools: a complaint question reaches the server.
            async with http.post(f"{service.url}/api/v1/chat", json={
                    "session_id": "s1", "message": "Find complaints of customer CUST-1"}) as resp:
                assert resp.status == 200
                assert "not available" not in (await resp.json())["message"]
            # The children take the service's generated token and nobody else's.
            url = re.search(r"MCP Server: (http://127\.0\.0\.1:\d+/mcp)", banner)
            assert url is not None
            async with http.post(url.group(1), json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
                                 headers={"Accept": "application/json, text/event-stream"}) as anonymous:
                assert anonymous.status == 401
            # The banner prints the run's token, so another client (the MCP Inspector, an SDK) can use it.
            token = re.search(r"  • Token: (\S+) \(this run only", banner)
            assert token is not None, banner
            assert await _initialize(http, url.group(1), token.group(1)) == 200
            # A child that dies is started again.
            os.kill(pids["Complaints MCP"], signal.SIGKILL)
            await eventually(lambda: not _alive(pids["Complaints MCP"]), "the killed child is gone")
            parent = psutil.Process(service.proc.pid)

            def restarted() -> bool:
                return any("complaints-mcp" in " ".join(c.cmdline()) for c in parent.children()
                           if c.pid != pids["Complaints MCP"] and c.status() != psutil.STATUS_ZOMBIE)

            await eventually(restarted, "the complaints server is restarted", timeout=15)
            children = [c.pid for c in parent.children()]
    finally:
        service.proc.send_signal(signal.SIGTERM)
        code, out, err = await service.finish()
    assert code == 0, err
    assert out.splitlines()[-len(GOODBYE):][-1] == GOODBYE[-1]
    for pid in children:
        await eventually(_stopped(pid), f"child {pid} stopped with the service")


async def _initialize(http: aiohttp.ClientSession, url: str, token: str) -> int:
    body = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "test", "version": "1"}}}
    async with http.post(url, json=body, headers={"Accept": "application/json, text/event-stream",
                                                  "Authorization": f"Bearer {token}"}) as resp:
        return resp.status


async def test_a_token_the_user_sets_is_the_servers_token_and_is_not_printed(tmp_path: Path) -> None:
    token = "a-stable-token-for-the-inspector-0123456789"
    service = await _start_with_servers(tmp_path, MCP_AUTH_TOKEN=token)
    try:
        banner = "\n".join(service.stdout)
        assert "  • Token: MCP_AUTH_TOKEN (send 'Authorization: Bearer $MCP_AUTH_TOKEN')" in banner
        assert token not in banner
        urls = re.findall(r"  • (?:Complaints|Escalation) MCP: (http://127\.0\.0\.1:\d+/mcp) \(pid", banner)
        assert len(urls) == 2
        async with aiohttp.ClientSession() as http:
            for url in urls:
                assert await _initialize(http, url, token) == 200
                assert await _initialize(http, url, "not-the-token") == 401
    finally:
        service.proc.send_signal(signal.SIGTERM)
        code, _, err = await service.finish()
    assert code == 0, err


async def test_plain_serve_starts_no_reference_servers(tmp_path: Path) -> None:
    service = await _start(tmp_path)
    try:
        assert "Supervised reference servers:" not in "\n".join(service.stdout)
        assert psutil.Process(service.proc.pid).children() == []
    finally:
        service.proc.send_signal(signal.SIGTERM)
        code, _, _ = await service.finish()
    assert code == 0


async def test_a_killed_service_leaves_no_reference_server_behind(tmp_path: Path) -> None:
    """SIGKILL (an out-of-memory kill, docker kill) runs no cleanup in the service: the children
    notice their stdin pipe close and stop by themselves, freeing their ports for the next start."""
    service = await _start_with_servers(tmp_path)
    pids = _child_pids(service.stdout)
    ports = [int(p) for p in re.findall(r"http://127\.0\.0\.1:(\d+)/mcp \(pid", "\n".join(service.stdout))]
    assert set(pids) == {"Complaints MCP", "Escalation MCP"} and len(ports) == 2, service.stdout
    service.proc.kill()
    try:  # not proc.wait() or communicate(): they wait for the pipes too, which an orphan would hold open
        await eventually(lambda: service.proc.returncode is not None, "the service to be gone")
        for name, pid in pids.items():
            await eventually(_stopped(pid), f"{name} stopped after its parent was killed",
                             timeout=30)
    finally:
        for pid in pids.values():  # if the test failed: no orphan outlives it
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        for stream in (service.proc.stdout, service.proc.stderr):
            if stream is not None:
                stream.feed_eof()
    for port in ports:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))  # free again
