"""Fixtures for the EscalationComms tests: hermetic settings, the real server on a loopback port,
a real MCP client over Streamable HTTP, a recording SMTP server, and a scripted ACS endpoint."""

from __future__ import annotations

import base64
import hashlib
import hmac
import socket
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from mcp import Client

from msev15.escalation.config import EscalationSettings
from msev15.escalation.server import EscalationServer
from tests.smtp_server import RecordingSMTP

ACS_KEY = base64.b64encode(b"escalation-test-access-key-0123456789").decode()


def make_settings(tmp_path: Path, **overrides: Any) -> EscalationSettings:
    """Defaults made hermetic and fast: files under tmp_path, loopback, 10 ms backoff base."""
    base: dict[str, Any] = dict(
        host="127.0.0.1",
        port=0,
        escalation_db_path=str(tmp_path / "db" / "escalation.db"),
        email_outbox_dir=str(tmp_path / "outbox"),
        email_retry_base_seconds=0.01,
        email_timeout_seconds=5.0,
    )
    base.update(overrides)
    return EscalationSettings.defaults(**base)


def uc2_args(**overrides: Any) -> dict[str, Any]:
    args = dict(
        ticket_id="TKT-2025-001234",
        customer_id="CUST-001",
        customer_email="jane.doe@example.com",
        query="What is the interest rate for mortgage loans?",
        use_case="UC2",
        reason="Out of scope - Mortgages not in knowledge base",
    )
    args.update(overrides)
    return args


def uc3_args(**overrides: Any) -> dict[str, Any]:
    return uc2_args(ticket_id="TKT-2025-001235", use_case="UC3",
                    query="I need help with complex financial planning across multiple areas...",
                    reason="Complex multi-topic requiring human advisor", **overrides)


@asynccontextmanager
async def running(settings: EscalationSettings, **kwargs: Any) -> AsyncIterator[EscalationServer]:
    async with EscalationServer(settings, **kwargs) as server:
        yield server


@asynccontextmanager
async def connect(server: EscalationServer) -> AsyncIterator[Client]:
    async with Client(server.url) as client:
        yield client


async def http_get(server: EscalationServer, path: str) -> tuple[int, str, str]:
    """(status, content type, body) of GET base_url + path."""
    async with aiohttp.ClientSession() as session, session.get(server.base_url + path) as response:
        return response.status, response.headers.get("Content-Type", ""), await response.text()


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample in a Prometheus text exposition (0 when absent)."""
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith("#") or " " not in line:
            continue
        key, value = line.rsplit(" ", 1)
        sample, _, rest = key.partition("{")
        found = ",".join(sorted(rest.rstrip("}").split(","))) if rest else ""
        if sample == name and found == wanted:
            return float(value)
    return 0.0


@pytest.fixture
def settings_for(tmp_path: Path) -> Callable[..., EscalationSettings]:
    return lambda **overrides: make_settings(tmp_path, **overrides)


@pytest.fixture
async def smtp() -> AsyncIterator[RecordingSMTP]:
    async with RecordingSMTP() as server:
        yield server


@pytest.fixture
def dead_port() -> Iterator[int]:
    """A loopback port that refuses connections (bound, never listening) for the whole test."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


class RefusingSMTP(RecordingSMTP):
    """Refuses (550, permanent) any message for an address in ``refuse``; records the rest."""

    def __init__(self, refuse: set[str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.refuse = refuse

    def _deliver(self, session: Any, envelope: Any) -> str:
        if set(envelope.rcpt_tos) & self.refuse:
            self.attempts += 1
            return "550 5.1.1 Mailbox unavailable"
        return super()._deliver(session, envelope)


class ScriptedACS:
    """An Azure Communication Services email endpoint on loopback.

    Checks every request's HMAC-SHA256 signature against ``ACS_KEY`` (401 when wrong), records
    it, answers sends from ``send_script`` (HTTP statuses, 202 once the script is used up) and
    operation polls with ``final_status`` (default ``Succeeded``).
    """

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.send_script: list[int] = []
        self.final_status: dict[str, str] = {}
        self.operations: dict[str, dict[str, Any]] = {}
        self.bad_signatures = 0

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/emails:send", self._send)
        app.router.add_get("/emails/operations/{operation_id}", self._operation)
        return app

    def _signed(self, request: web.Request, body: bytes) -> bool:
        digest = base64.b64encode(hashlib.sha256(body).digest()).decode()
        if request.headers.get("x-ms-content-sha256") != digest:
            return False
        to_sign = f"{request.method}\n{request.raw_path}\n{request.headers.get('x-ms-date')};{request.host};{digest}"
        mac = base64.b64encode(hmac.new(base64.b64decode(ACS_KEY), to_sign.encode(), hashlib.sha256).digest())
        expected = f"HMAC-SHA256 SignedHeaders=x-ms-date;host;x-ms-content-sha256&Signature={mac.decode()}"
        return hmac.compare_digest(request.headers.get("Authorization", ""), expected)

    async def _send(self, request: web.Request) -> web.Response:
        body = await request.read()
        if not self._signed(request, body):
            self.bad_signatures += 1
            return web.json_response({"error": {"code": "Denied", "message": "Bad signature"}}, status=401)
        self.requests.append({"headers": dict(request.headers), "json": await request.json(),
                              "query": dict(request.query)})
        status = self.send_script.pop(0) if self.send_script else 202
        if status != 202:
            return web.json_response({"error": {"code": "Scripted", "message": f"scripted {status}"}}, status=status)
        operation_id = request.headers.get("Operation-Id") or str(uuid.uuid4())
        self.operations[operation_id] = self.requests[-1]
        location = f"{request.scheme}://{request.host}/emails/operations/{operation_id}?api-version=2025-09-01"
        return web.json_response({"id": operation_id, "status": "Running"}, status=202,
                                 headers={"Operation-Location": location, "Retry-After": "0"})

    async def _operation(self, request: web.Request) -> web.Response:
        if not self._signed(request, b""):
            self.bad_signatures += 1
            return web.json_response({"error": {"code": "Denied", "message": "Bad signature"}}, status=401)
        operation_id = request.match_info["operation_id"]
        if operation_id not in self.operations:
            return web.json_response({"error": {"code": "NotFound", "message": "no such operation"}}, status=404)
        status = self.final_status.get(operation_id, "Succeeded")
        body: dict[str, Any] = {"id": operation_id, "status": status}
        if status == "Failed":
            body["error"] = {"code": "EmailDroppedAllRecipientsSuppressed", "message": "Recipient suppressed"}
        return web.json_response(body)


@pytest.fixture
async def acs(aiohttp_server: Any) -> AsyncIterator[tuple[ScriptedACS, str]]:
    """(the scripted endpoint, a connection string pointing at it)."""
    scripted = ScriptedACS()
    server = await aiohttp_server(scripted.app(), host="127.0.0.1")
    yield scripted, f"endpoint=http://127.0.0.1:{server.port}/;accesskey={ACS_KEY}"
