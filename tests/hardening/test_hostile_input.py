"""Hostile request bodies, ids and parameters: the right status and envelope, nothing written.

Each case goes to both chat endpoints (and the session endpoints for ids in the URL). A refused
request must publish no turn, create no session and leave the outbox empty; the service must
still answer normally afterwards.
"""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from msev15.events.context import BUS
from msev15.store.base import SESSIONS
from tests.conftest import assert_envelope

MIB = 1024 * 1024
JSON = "application/json"


@dataclass(frozen=True)
class Case:
    name: str
    body: bytes
    status: int
    error: str
    field: str | None = None
    content_type: str = JSON


def _chat(session_id: Any = "s-1", message: Any = "hello", **extra: Any) -> bytes:
    return json.dumps({"session_id": session_id, "message": message, **extra}).encode()


def _raw_chat(session_id: bytes = b'"s-1"', message: bytes = b'"hello"') -> bytes:
    return b'{"session_id": ' + session_id + b', "message": ' + message + b"}"


BODIES = [
    Case("oversized body", _chat(message="x" * (2 * MIB)), 413, "payload_too_large"),
    Case("deeply nested arrays", _raw_chat(message=b"[" * 200_000 + b"]" * 200_000), 400, "invalid_json"),
    Case("deeply nested objects", _raw_chat(message=b'{"a": ' * 100_000 + b"1" + b"}" * 100_000), 400, "invalid_json"),
    Case("nested but parseable", _raw_chat(message=b"[" * 500 + b"]" * 500), 400, "validation_error", "message"),
    Case("invalid UTF-8", _raw_chat(message=b'"\xff\xfe caf\xe9"'), 400, "invalid_json"),
    Case("UTF-8 encoded surrogate", _raw_chat(message=b'"\xed\xa0\x80"'), 400, "invalid_json"),
    Case("lone surrogate escape", _raw_chat(message=b'"repeat \\ud800 please"'), 400, "validation_error", "message"),
    Case("raw NUL byte in a string", _raw_chat(message=b'"a\x00b"'), 400, "invalid_json"),
    Case("escaped NUL in message", _chat(message="hi\x00there"), 400, "validation_error", "message"),
    Case("NUL in session_id", _chat(session_id="abc\x00def"), 400, "validation_error", "session_id"),
    Case("10,000-character session_id", _chat(session_id="s" * 10_000), 400, "validation_error", "session_id"),
    Case("10,000-character tenant_id", _chat(tenant_id="t" * 10_000), 400, "validation_error", "tenant_id"),
    Case("session_id with a trailing newline", _chat(session_id="abc\n"), 400, "validation_error", "session_id"),
    Case("session_id with a path", _chat(session_id="../../etc/passwd"), 400, "validation_error", "session_id"),
    Case("message over MAX_MESSAGE_CHARS", _chat(message="m" * 16_001), 400, "validation_error", "message"),
    Case("integer with 100,000 digits", _raw_chat(message=b"9" * 100_000), 400, "invalid_json"),
    Case("NaN instead of text", _raw_chat(message=b"NaN"), 400, "validation_error", "message"),
    Case("unknown field", _chat(role="system"), 400, "validation_error", "role"),
    Case("array body", b'[{"session_id": "s-1", "message": "hello"}]', 400, "validation_error"),
    Case("empty body", b"", 400, "invalid_json"),
    Case("unknown charset", _chat(), 415, "unsupported_media_type", content_type=f"{JSON}; charset=rot13"),
    Case("UTF-16 charset", _chat().decode().encode("utf-16"), 415, "unsupported_media_type",
         content_type=f"{JSON}; charset=utf-16"),
    Case("form body", b"session_id=s-1&message=hello", 415, "unsupported_media_type",
         content_type="application/x-www-form-urlencoded"),
]


@pytest.fixture
async def client(service: Any) -> AsyncIterator[TestClient]:
    yield await service()


async def _assert_nothing_written(client: TestClient, tmp_path: Path) -> None:
    app = client.app
    assert app is not None
    assert app[BUS].published == 0, "a refused request published a turn"
    assert await app[SESSIONS].count() == 0, "a refused request created a session"
    outbox = tmp_path / "data" / "outbox"
    assert not outbox.exists() or not any(outbox.iterdir())
    health = await client.get("/health")
    assert health.status == 200


@pytest.mark.parametrize("path", ["/api/v1/chat", "/api/v1/chat/stream"])
@pytest.mark.parametrize("case", BODIES, ids=lambda case: case.name)
async def test_hostile_body_is_refused_with_the_envelope(client: TestClient, tmp_path: Path, path: str,
                                                         case: Case) -> None:
    resp = await client.post(path, data=io.BytesIO(case.body), headers={"Content-Type": case.content_type})
    assert resp.status == case.status, await resp.text()
    assert resp.content_type == JSON
    body = await resp.json()
    assert_envelope(body, case.error)
    assert body["request_id"] == resp.headers["X-Request-ID"]
    if case.field is not None:
        assert body["field"] == case.field, body
    await _assert_nothing_written(client, tmp_path)


async def test_chunked_body_over_the_limit_is_413(client: TestClient, tmp_path: Path) -> None:
    """No Content-Length to refuse up front: the limit is enforced while the body streams in."""

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"session_id": "s-1", "message": "'
        for _ in range(40):
            yield b"x" * 65536
        yield b'"}'

    resp = await client.post("/api/v1/chat", data=chunks(), headers={"Content-Type": JSON})
    assert resp.status == 413
    assert_envelope(await resp.json(), "payload_too_large")
    await _assert_nothing_written(client, tmp_path)


URLS = [
    ("GET", "/api/v1/sessions/" + "a" * 7000 + "/history", 400, "validation_error", "session_id"),
    ("DELETE", "/api/v1/sessions/" + "a" * 7000, 400, "validation_error", "session_id"),
    ("GET", "/api/v1/sessions/a%00b/history", 400, "validation_error", "session_id"),
    ("GET", "/api/v1/sessions/a%0Ab/history", 400, "validation_error", "session_id"),
    ("GET", "/api/v1/sessions/..%2F..%2Fetc%2Fpasswd/history", 400, "validation_error", "session_id"),
    ("GET", "/api/v1/sessions?tenant_id=" + "t" * 7000, 400, "validation_error", "tenant_id"),
    ("GET", "/api/v1/sessions?limit=" + "9" * 5000, 400, "validation_error", "limit"),
    ("GET", "/api/v1/sessions?offset=-1", 400, "validation_error", "offset"),
    ("GET", "/api/v1/sessions?limit=1e3", 400, "validation_error", "limit"),
]


@pytest.mark.parametrize(("method", "url", "status", "error", "field"), URLS, ids=[u[1][:60] for u in URLS])
async def test_hostile_id_or_parameter_in_the_url(client: TestClient, tmp_path: Path, method: str, url: str,
                                                  status: int, error: str, field: str) -> None:
    resp = await client.request(method, url)
    assert resp.status == status, await resp.text()
    body = await resp.json()
    assert_envelope(body, error)
    assert body["field"] == field
    await _assert_nothing_written(client, tmp_path)


async def test_the_same_requests_done_right_are_accepted(client: TestClient) -> None:
    """The good twin of the table: the checks refuse only what is hostile."""
    resp = await client.post("/api/v1/chat", data=_chat(session_id="a" * 128, message="é" * 16_000,
                                                        tenant_id="t" * 128),
                             headers={"Content-Type": f"{JSON}; charset=UTF-8"})
    assert resp.status == 200, await resp.text()
    history = await client.get(f"/api/v1/sessions/{'a' * 128}/history", params={"tenant_id": "t" * 128})
    assert (await history.json())["message_count"] == 2
