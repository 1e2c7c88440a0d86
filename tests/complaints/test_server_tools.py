"""The complaints MCP server's tools, through the real SDK client over Streamable HTTP."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import aiohttp
from mcp import Client
from mcp_types import TextContent

from msev15 import __version__
from msev15.complaints.server import build_server
from msev15.complaints.store import ComplaintStore

from .server import McpTestServer

TOOLS = {"register_complaint", "get_complaint", "search_complaints", "update_complaint", "resolve_complaint",
         "archive_complaint"}


async def _ok(client: Client, tool: str, **args: Any) -> dict[str, Any]:
    result = await client.call_tool(tool, args)
    assert not result.is_error, result.content
    assert result.structured_content is not None
    return result.structured_content


async def _error(client: Client, tool: str, **args: Any) -> str:
    result = await client.call_tool(tool, args)
    assert result.is_error
    return "\n".join(block.text for block in result.content if isinstance(block, TextContent))


async def _register(client: Client, **overrides: Any) -> dict[str, Any]:
    args = {"customer_id": "CUST-7", "description": "Charged twice for one order"} | overrides
    return await _ok(client, "register_complaint", **args)


async def test_the_server_reports_the_package_version(complaints_server: McpTestServer) -> None:
    async with Client(complaints_server.url) as client:
        assert client.server_info is not None and client.server_info.version == __version__


async def test_lists_the_six_tools_with_typed_schemas(complaints_server: McpTestServer) -> None:
    async with Client(complaints_server.url) as client:
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
        assert set(tools) == TOOLS
        register = tools["register_complaint"]
        assert register.description and "Register" in register.description
        props = register.input_schema["properties"]
        assert set(register.input_schema["required"]) == {"customer_id", "description"}
        assert props["category"]["enum"] == ["product", "delivery", "billing", "service", "other"]
        assert props["priority"]["enum"] == ["low", "medium", "high", "urgent"]
        search = tools["search_complaints"].input_schema["properties"]
        assert search["limit"]["maximum"] == 100 and search["limit"]["minimum"] == 1
        assert tools["get_complaint"].output_schema is not None
        assert "status" in tools["get_complaint"].output_schema["properties"]


async def test_register_then_get(complaints_server: McpTestServer) -> None:
    async with Client(complaints_server.url) as client:
        created = await _register(client, category="billing", priority="high", order_id="ORD-1001")
        assert created["status"] == "open" and created["id"].startswith("CMP-")
        fetched = await _ok(client, "get_complaint", complaint_id=created["id"])
        assert fetched == created
        assert complaints_server.store is not None
        assert complaints_server.store.get(created["id"]).order_id == "ORD-1001"  # really stored


async def test_search_by_customer_and_text(complaints_server: McpTestServer) -> None:
    async with Client(complaints_server.url) as client:
        billing = await _register(client, category="billing")
        await _register(client, customer_id="OTHER", description="Late delivery")
        found = await _ok(client, "search_complaints", customer_id="CUST-7")
        assert [c["id"] for c in found["complaints"]] == [billing["id"]]
        assert (found["count"], found["total"]) == (1, 1)
        by_text = await _ok(client, "search_complaints", query="late")
        assert [c["customer_id"] for c in by_text["complaints"]] == ["OTHER"]


async def test_full_lifecycle_update_resolve_reopen_archive(complaints_server: McpTestServer) -> None:
    async with Client(complaints_server.url) as client:
        complaint_id = (await _register(client))["id"]
        started = await _ok(client, "update_complaint", complaint_id=complaint_id, status="in_progress",
                            priority="urgent")
        assert (started["status"], started["priority"]) == ("in_progress", "urgent")
        resolved = await _ok(client, "resolve_complaint", complaint_id=complaint_id,
                             resolution="Refunded the duplicate")
        assert (resolved["status"], resolved["resolution"]) == ("resolved", "Refunded the duplicate")
        reopened = await _ok(client, "update_complaint", complaint_id=complaint_id, status="in_progress")
        assert reopened["status"] == "in_progress" and reopened["resolution"] is None
        archived = await _ok(client, "archive_complaint", complaint_id=complaint_id)
        assert archived["status"] == "archived" and archived["archived_at"]


async def test_get_unknown_id_is_an_error_result(complaints_server: McpTestServer) -> None:
    async with Client(complaints_server.url) as client:
        assert (await _error(client, "get_complaint", complaint_id="CMP-DEADBEEF")).endswith(
            "complaint CMP-DEADBEEF not found")


async def test_get_malformed_id_is_an_error_result(complaints_server: McpTestServer) -> None:
    async with Client(complaints_server.url) as client:
        assert "complaint_id must look like CMP-1A2B3C4D, got 'order 5'" in await _error(
            client, "get_complaint", complaint_id="order 5")


async def test_register_with_unknown_category_is_a_validation_error(complaints_server: McpTestServer) -> None:
    async with Client(complaints_server.url) as client:
        message = await _error(client, "register_complaint", customer_id="C", description="x", category="weather")
        assert "category" in message and "'product', 'delivery', 'billing', 'service' or 'other'" in message


async def test_register_without_description_is_a_validation_error(complaints_server: McpTestServer) -> None:
    async with Client(complaints_server.url) as client:
        message = await _error(client, "register_complaint", customer_id="C")
        assert "description" in message and "Field required" in message


async def test_register_with_blank_description_is_refused(complaints_server: McpTestServer) -> None:
    async with Client(complaints_server.url) as client:
        assert (await _error(client, "register_complaint", customer_id="C", description="   ")).endswith(
            "description must not be empty")


async def test_search_limit_above_maximum_is_a_validation_error(complaints_server: McpTestServer) -> None:
    async with Client(complaints_server.url) as client:
        message = await _error(client, "search_complaints", limit=1000)
        assert "limit" in message and "less than or equal to 100" in message


async def test_resolving_an_archived_complaint_is_an_illegal_transition(complaints_server: McpTestServer) -> None:
    async with Client(complaints_server.url) as client:
        complaint_id = (await _register(client))["id"]
        await _ok(client, "archive_complaint", complaint_id=complaint_id)
        message = await _error(client, "resolve_complaint", complaint_id=complaint_id, resolution="Too late")
        assert f"cannot change complaint {complaint_id} from archived to resolved" in message


async def test_archiving_twice_is_refused(complaints_server: McpTestServer) -> None:
    async with Client(complaints_server.url) as client:
        complaint_id = (await _register(client))["id"]
        await _ok(client, "archive_complaint", complaint_id=complaint_id)
        assert (await _error(client, "archive_complaint", complaint_id=complaint_id)).endswith(
            f"complaint {complaint_id} is already archived")


async def test_update_with_nothing_to_change_is_refused(complaints_server: McpTestServer) -> None:
    async with Client(complaints_server.url) as client:
        complaint_id = (await _register(client))["id"]
        assert "nothing to update" in await _error(client, "update_complaint", complaint_id=complaint_id)


async def test_update_to_resolved_is_refused_with_a_pointer(complaints_server: McpTestServer) -> None:
    async with Client(complaints_server.url) as client:
        complaint_id = (await _register(client))["id"]
        message = await _error(client, "update_complaint", complaint_id=complaint_id, status="resolved")
        assert "use resolve_complaint" in message


async def test_health_route(complaints_server: McpTestServer) -> None:
    async with aiohttp.ClientSession() as http, http.get(f"{complaints_server.base_url}/health") as response:
        assert response.status == 200
        assert await response.json() == {"status": "ok", "server": "complaints"}


async def test_health_reports_a_broken_store(complaints_server: McpTestServer) -> None:
    assert complaints_server.store is not None
    complaints_server.store.close()
    async with aiohttp.ClientSession() as http, http.get(f"{complaints_server.base_url}/health") as response:
        assert response.status == 503
        body = await response.json()
        assert body["status"] == "unavailable" and "closed" in body["detail"]


async def test_data_survives_a_server_restart(complaints_server: McpTestServer) -> None:
    async with Client(complaints_server.url) as first:
        complaint_id = (await _register(first))["id"]
    await complaints_server.stop()
    await complaints_server.start()
    async with Client(complaints_server.url) as second:
        assert (await _ok(second, "get_complaint", complaint_id=complaint_id))["id"] == complaint_id


def test_building_the_server_leaves_process_logging_alone(tmp_path: Path) -> None:
    """The SDK calls logging.basicConfig; with an unconfigured root logger that would install
    its own handler and format for the whole process."""
    root = logging.getLogger()
    saved, saved_level = list(root.handlers), root.level
    root.handlers.clear()
    root.setLevel(logging.WARNING)
    try:
        with ComplaintStore(tmp_path / "c.db") as store:
            server = build_server(store)
        assert server.name == "complaints"
        assert (root.handlers, root.level) == ([], logging.WARNING)
    finally:
        root.handlers[:] = saved
        root.setLevel(saved_level)
