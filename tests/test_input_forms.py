"""Numbers and text in the forms the OpenAPI document states, no wider and no narrower.

Integers in the query are ASCII digits (Python's ``int()`` also reads "+5", "5_0" and fullwidth
or other Unicode digits, and ``str.isdigit`` passes "\u00b2", which ``int()`` then refuses). A message
is blank only when made of what JSON Schema's ``\\s`` matches, as the documented pattern says.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from msev15.handlers.validation import MESSAGE_PATTERN
from tests.conftest import assert_envelope


async def _finished_turn(client: Any) -> str:
    resp = await client.post("/api/v1/chat", json={"session_id": "s", "message": "hello"})
    assert resp.status == 200
    turn_id: str = (await resp.json())["turn_id"]
    return turn_id


@pytest.mark.parametrize("after", ["\u00b2", "\u0661", "\uff11", "+1", "1_0", " 1", "-1", "1.0", "0x1", "1234567890"])
async def test_after_outside_ascii_digits_is_a_400(service: Any, after: str) -> None:
    client = await service()
    turn_id = await _finished_turn(client)
    resp = await client.get(f"/api/v1/sessions/s/turns/{turn_id}/events", params={"after": after})
    assert resp.status == 400
    body = await resp.json()
    assert_envelope(body, "validation_error")
    assert body["field"] == "after"


async def test_after_in_ascii_digits_is_read(service: Any) -> None:
    client = await service()
    turn_id = await _finished_turn(client)
    resp = await client.get(f"/api/v1/sessions/s/turns/{turn_id}/events", params={"after": "0"})
    assert resp.status == 200 and "done" in await resp.text()
    status = await (await client.get(f"/api/v1/sessions/s/turns/{turn_id}")).json()
    end = await client.get(f"/api/v1/sessions/s/turns/{turn_id}/events", params={"after": str(status["last_seq"])})
    assert end.status == 204


@pytest.mark.parametrize("name,value", [("limit", "\uff11"), ("limit", "+5"), ("limit", "5_0"), ("limit", "\u00b2"),
                                        ("offset", "\u0663"), ("offset", "+0"), ("limit", " 5")])
async def test_limit_and_offset_outside_ascii_digits_are_a_400(service: Any, name: str, value: str) -> None:
    resp = await (await service()).get("/api/v1/sessions", params={name: value})
    assert resp.status == 400
    body = await resp.json()
    assert_envelope(body, "validation_error")
    assert body["field"] == name


async def test_limit_and_offset_in_ascii_digits_are_read(service: Any) -> None:
    resp = await (await service()).get("/api/v1/sessions", params={"limit": "5", "offset": "0"})
    assert resp.status == 200
    body = await resp.json()
    assert (body["limit"], body["offset"]) == (5, 0)


# U+001C..U+001F are whitespace to Python's str.isspace, not to JSON Schema's \s.
@pytest.mark.parametrize("message", ["\u001c", "\u001f", "\u0085", " \u001d "])
async def test_a_message_the_schema_allows_is_accepted(service: Any, message: str) -> None:
    assert re.fullmatch(MESSAGE_PATTERN, message)
    resp = await (await service()).post("/api/v1/chat", json={"session_id": "s", "message": message})
    assert resp.status == 200, await resp.text()


@pytest.mark.parametrize("message", [" ", "\t\n", "\u00a0", "\u3000", "\ufeff", "\u2028 \u200a"])
async def test_a_blank_message_is_refused_as_the_schema_says(service: Any, message: str) -> None:
    assert not re.fullmatch(MESSAGE_PATTERN, message)
    resp = await (await service()).post("/api/v1/chat", json={"session_id": "s", "message": message})
    assert resp.status == 400
    body = await resp.json()
    assert_envelope(body, "validation_error")
    assert body["field"] == "message"


async def test_protocol_messages_follow_the_same_rule(service: Any) -> None:
    client = await service()
    agui = await client.post("/api/v1/ag-ui", json={"threadId": "t", "runId": "r", "messages": [
        {"id": "m", "role": "user", "content": "\u001c"}]})
    assert agui.status == 200
    await agui.read()
    aisdk = await client.post("/api/v1/ai-sdk/chat", json={"id": "a", "messages": [
        {"id": "m", "role": "user", "parts": [{"type": "text", "text": "\u001c"}]}]})
    assert aisdk.status == 200
    await aisdk.read()
