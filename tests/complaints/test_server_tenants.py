"""The complaints MCP server scopes every tool to the tenant in the request's ``_meta``."""

from __future__ import annotations

import json
from typing import Any

import pytest
from mcp import Client

from msev15.mcpkit.meta import TENANT_META_KEY
from tests.mcp_calls import as_meta, error_as, first_text, ok_as

from .server import McpTestServer

A, B = "acme", "globex"
_PREFIX = "Error executing tool {tool}: "


async def _error(client: Client, tool: str, tenant: object | None, **args: Any) -> str:
    return (await error_as(client, tool, tenant, **args)).removeprefix(_PREFIX.format(tool=tool))


async def _acme_complaint(client: Client) -> str:
    created = await ok_as(client, "register_complaint", A, customer_id="CUST-1", description="Parcel crushed",
                        order_id="ORD-1")
    return created["id"]


def _changes(complaint_id: str) -> dict[str, dict[str, Any]]:
    """A call of every tool that names one complaint, with arguments that would succeed."""
    return {
        "get_complaint": {"complaint_id": complaint_id},
        "update_complaint": {"complaint_id": complaint_id, "priority": "low", "status": "in_progress"},
        "resolve_complaint": {"complaint_id": complaint_id, "resolution": "Closed by the wrong tenant"},
        "archive_complaint": {"complaint_id": complaint_id},
    }


async def test_no_tool_schema_offers_a_tenant_or_context_argument(complaints_server: McpTestServer) -> None:
    async with Client(complaints_server.url) as client:
        tools = (await client.list_tools()).tools
    assert len(tools) == 6
    for tool in tools:
        assert not {"ctx", "tenant_id"} & set(tool.input_schema["properties"]), tool.name
        assert "tenant" not in json.dumps(tool.input_schema).lower(), tool.name
        assert "ctx" not in tool.input_schema.get("required", []), tool.name


async def test_owner_tenant_can_use_every_tool(complaints_server: McpTestServer) -> None:
    async with Client(complaints_server.url) as client:
        complaint_id = await _acme_complaint(client)
        assert (await ok_as(client, "get_complaint", A, complaint_id=complaint_id))["id"] == complaint_id
        found = await ok_as(client, "search_complaints", A, customer_id="CUST-1")
        assert [c["id"] for c in found["complaints"]] == [complaint_id]
        assert (await ok_as(client, "update_complaint", A, complaint_id=complaint_id,
                          status="in_progress"))["status"] == "in_progress"
        assert (await ok_as(client, "resolve_complaint", A, complaint_id=complaint_id,
                          resolution="Replaced"))["status"] == "resolved"
        assert (await ok_as(client, "archive_complaint", A, complaint_id=complaint_id))["status"] == "archived"
    assert complaints_server.store is not None
    assert complaints_server.store.get(complaint_id, tenant_id=A).status == "archived"


@pytest.mark.parametrize("tool", ["get_complaint", "update_complaint", "resolve_complaint", "archive_complaint"])
async def test_other_tenant_gets_not_found_like_a_missing_id(complaints_server: McpTestServer, tool: str) -> None:
    async with Client(complaints_server.url) as client:
        complaint_id = await _acme_complaint(client)
        foreign = await _error(client, tool, B, **_changes(complaint_id)[tool])
        missing = await _error(client, tool, B, **_changes("CMP-00000000")[tool])
        assert foreign == f"complaint {complaint_id} not found"
        assert foreign.replace(complaint_id, "<id>") == missing.replace("CMP-00000000", "<id>")
        untouched = await ok_as(client, "get_complaint", A, complaint_id=complaint_id)
    assert (untouched["status"], untouched["priority"], untouched["resolution"]) == ("open", "medium", None)


async def test_other_tenant_finds_nothing(complaints_server: McpTestServer) -> None:
    async with Client(complaints_server.url) as client:
        await _acme_complaint(client)
        for filters in ({}, {"customer_id": "CUST-1"}, {"order_id": "ORD-1"}, {"status": "open"},
                        {"query": "crushed"}):
            found = await ok_as(client, "search_complaints", B, **filters)
            assert found == {"complaints": [], "count": 0, "total": 0}, filters
        assert (await ok_as(client, "search_complaints", A))["total"] == 1


async def test_calls_without_the_meta_key_use_the_default_tenant(complaints_server: McpTestServer) -> None:
    async with Client(complaints_server.url) as client:
        created = await ok_as(client, "register_complaint", None, customer_id="CUST-1", description="No tenant")
        assert (await ok_as(client, "get_complaint", "default", complaint_id=created["id"]))["id"] == created["id"]
        assert (await ok_as(client, "search_complaints", None))["total"] == 1
        acme_id = await _acme_complaint(client)
        assert await _error(client, "get_complaint", None, complaint_id=acme_id) == f"complaint {acme_id} not found"
        assert (await ok_as(client, "search_complaints", A))["total"] == 1
    assert complaints_server.store is not None
    assert complaints_server.store.get(created["id"], tenant_id="default").description == "No tenant"


async def test_other_meta_keys_do_not_select_a_tenant(complaints_server: McpTestServer) -> None:
    async with Client(complaints_server.url) as client:
        acme_id = await _acme_complaint(client)
        result = await client.call_tool("get_complaint", {"complaint_id": acme_id},
                                        meta=as_meta({"tenant_id": A, "other.example/tenant_id": A}))
    # Only the namespaced key counts: this call ran as "default", which has no such complaint.
    assert result.is_error and first_text(result).endswith(f"complaint {acme_id} not found")


async def test_a_tenant_argument_does_not_select_a_tenant(complaints_server: McpTestServer) -> None:
    async with Client(complaints_server.url) as client:
        acme_id = await _acme_complaint(client)
        message = await _error(client, "get_complaint", B, complaint_id=acme_id, tenant_id=A)
        assert message == f"complaint {acme_id} not found"
        assert (await ok_as(client, "search_complaints", B, tenant_id=A))["total"] == 0


@pytest.mark.parametrize("tool", ["register_complaint", "get_complaint", "search_complaints", "update_complaint",
                                  "resolve_complaint", "archive_complaint"])
async def test_malformed_tenant_in_meta_is_refused_by_every_tool(complaints_server: McpTestServer, tool: str) -> None:
    async with Client(complaints_server.url) as client:
        complaint_id = await _acme_complaint(client)
        args = _changes(complaint_id).get(tool) or {
            "register_complaint": {"customer_id": "CUST-2", "description": "Sneaky"},
            "search_complaints": {},
        }[tool]
        message = await _error(client, tool, "acme/../globex", **args)
        assert message == ("tenant_id must be 1-128 characters: letters, digits and . _ : @ - (starting with a letter "
                           f"or digit), got 'acme/../globex' (from _meta['{TENANT_META_KEY}'])")
        untouched = await ok_as(client, "get_complaint", A, complaint_id=complaint_id)
        assert untouched["status"] == "open"
    assert complaints_server.store is not None
    assert complaints_server.store.search(customer_id="CUST-2").total == 0  # register wrote nothing


@pytest.mark.parametrize(("tenant", "problem"), [("", "must be 1-128 characters"), (42, "must be a string, got int"),
                                                 (["acme"], "must be a string, got list")])
async def test_empty_or_non_string_tenant_in_meta_is_refused(
    complaints_server: McpTestServer, tenant: object, problem: str
) -> None:
    async with Client(complaints_server.url) as client:
        message = await _error(client, "search_complaints", tenant)
    assert message.startswith(f"tenant_id {problem}") and message.endswith(f"(from _meta['{TENANT_META_KEY}'])")
