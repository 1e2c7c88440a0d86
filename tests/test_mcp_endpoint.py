"""The service's own MCP endpoint at /mcp, driven by the real ``mcp`` Python client over
Streamable HTTP, under AUTH_MODE=none and api_key."""

from __future__ import annotations

from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp.test_utils import TestClient
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.exceptions import MCPError
from mcp_types import CallToolResult, TextContent

from tests.llm_server import Reply, ScriptedLLM
from tests.security.authkit import create_keys

TOOL = "ask_customer_service_agent"
ANSWER = "Your order ORD-1A2B3C4D shipped yesterday"


@asynccontextmanager
async def mcp_client(client: TestClient, headers: dict[str, str] | None = None) -> Any:
    async with create_mcp_http_client(headers=headers or {}) as http:
        async with Client(streamable_http_client(str(client.make_url("/mcp")), http_client=http)) as mcp:
            yield mcp


def text(result: CallToolResult) -> str:
    return "".join(block.text for block in result.content if isinstance(block, TextContent))


async def scripted(service: Any, llm: ScriptedLLM, **overrides: Any) -> TestClient:
    client: TestClient = await service(llm_provider="openai", openai_base_url=f"{llm.url}/v1", openai_api_key="k",
                                       **overrides)
    return client


async def test_lists_the_one_tool_with_its_schemas(service) -> None:
    client = await service()
    async with mcp_client(client) as mcp:
        tools = (await mcp.list_tools()).tools
    [tool] = tools
    assert tool.name == TOOL
    assert tool.input_schema["required"] == ["message"] and "session_id" in tool.input_schema["properties"]
    assert tool.output_schema is not None
    assert set(tool.output_schema["required"]) == {"session_id", "turn_id", "status"}


async def test_a_call_answers_with_text_and_structured_content(service, llm: ScriptedLLM) -> None:
    llm.push(Reply(ANSWER), Reply("Anything else?"))
    client = await scripted(service, llm)
    async with mcp_client(client) as mcp:
        result = await mcp.call_tool(TOOL, {"message": "Where is my order?"})
        assert not result.is_error and text(result) == ANSWER
        answer = result.structured_content
        assert answer is not None and answer["status"] == "completed"
        again = await mcp.call_tool(TOOL, {"message": "Thanks", "session_id": answer["session_id"]})
    assert again.structured_content is not None and again.structured_content["session_id"] == answer["session_id"]
    history = await (await client.get(f"/api/v1/sessions/{answer['session_id']}/history")).json()
    assert [m["content"] for m in history["messages"]] == ["Where is my order?", ANSWER, "Thanks", "Anything else?"]
    status = await client.get(f"/api/v1/sessions/{answer['session_id']}/turns/{answer['turn_id']}")
    assert (await status.json())["status"] == "completed"


async def test_progress_notifications_carry_the_answer_as_it_is_written(service, llm: ScriptedLLM) -> None:
    llm.push(Reply(ANSWER))
    client = await scripted(service, llm)
    seen: list[tuple[float, str | None]] = []

    async def progress(value: float, total: float | None, message: str | None) -> None:
        seen.append((value, message))

    async with mcp_client(client) as mcp:
        result = await mcp.call_tool(TOOL, {"message": "Where is my order?"}, progress_callback=progress)
    assert not result.is_error and seen
    values = [value for value, _ in seen]
    assert values == sorted(values) and len(set(values)) == len(values)  # increasing, as MCP requires
    assert "".join(m or "" for _, m in seen).startswith(ANSWER)


async def test_a_failed_turn_is_an_error_result(service, llm: ScriptedLLM) -> None:
    llm.push(Reply(status=500), Reply(status=500), Reply(status=500))
    client = await scripted(service, llm, llm_max_retries=0)
    async with mcp_client(client) as mcp:
        result = await mcp.call_tool(TOOL, {"message": "Hello"})
    assert result.is_error and text(result).startswith("llm_error: ")
    assert result.structured_content is not None and result.structured_content["status"] == "failed"


@pytest.mark.parametrize(("args", "said"), [
    ({"message": "   "}, "message must not be empty"),
    ({"message": "Hi", "session_id": "../etc"}, "session_id must be"),
])
async def test_bad_arguments_are_error_results(service, args: dict[str, Any], said: str) -> None:
    client = await service()
    async with mcp_client(client) as mcp:
        result = await mcp.call_tool(TOOL, args)
    assert result.is_error and said in text(result)


async def test_api_key_auth_and_the_tenant_from_the_credential(service, llm: ScriptedLLM, tmp_path: Path) -> None:
    db = tmp_path / "keys.db"
    keys = await create_keys(db, "acme")
    llm.push(Reply(ANSWER))
    client = await scripted(service, llm, auth_mode="api_key", api_keys_db_path=str(db))
    async with mcp_client(client, {"X-API-Key": keys["acme"][1]}) as mcp:
        result = await mcp.call_tool(TOOL, {"message": "Where is my order?"})
    assert result.structured_content is not None
    session = result.structured_content["session_id"]
    mine = await client.get(f"/api/v1/sessions/{session}/history", headers={"X-API-Key": keys["acme"][1]})
    assert mine.status == 200


@pytest.mark.parametrize("headers", [{}, {"X-API-Key": "msev15_nope"}, {"Authorization": "Basic eDp5"}],
                         ids=["none", "unknown key", "wrong scheme"])
async def test_a_bad_credential_is_refused_before_any_mcp(service, tmp_path: Path, headers: dict[str, str]) -> None:
    db = tmp_path / "keys.db"
    await create_keys(db, "acme")
    client = await service(auth_mode="api_key", api_keys_db_path=str(db))
    with pytest.raises(BaseExceptionGroup) as caught:  # the client raises inside its task group
        async with mcp_client(client, headers):
            pass
    assert caught.group_contains(MCPError, match="error response")  # its initialize was refused
    async with httpx.AsyncClient() as http:
        resp = await http.post(str(client.make_url("/mcp")), headers=headers,
                               json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
    assert resp.status_code == 401 and resp.json()["error"] == "unauthorized"
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")


async def test_the_tenant_rate_limit_applies_to_tool_calls(service, llm: ScriptedLLM) -> None:
    llm.push(Reply(ANSWER))
    client = await scripted(service, llm, rate_limit_per_tenant_per_minute=1)
    async with mcp_client(client, {"X-Tenant-ID": "acme"}) as mcp:
        first = await mcp.call_tool(TOOL, {"message": "Where is my order?"})
        second = await mcp.call_tool(TOOL, {"message": "And now?"})
    assert not first.is_error
    assert second.is_error and "tenant_rate_limited: " in text(second)
    metrics = await (await client.get("/metrics")).text()
    assert 'route="/mcp"' in metrics
