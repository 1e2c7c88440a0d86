"""The order tools, called the way the agent calls them: through ToolRegistry.call."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from msev15.agent.tools.orders import order_tools
from msev15.agent.tools.registry import ToolContext, ToolRegistry
from msev15.store.orders import OrderRepository

A = ToolContext(tenant_id="tenant-a", session_id="s-a", request_id="r-a")
B = ToolContext(tenant_id="tenant-b", session_id="s-b", request_id="r-b")
NAMES = {"create_order", "get_order_by_id", "get_orders_by_customer", "search_orders",
         "update_order_status", "get_all_orders"}
GOOD = {"customer_id": "CUST-1", "product_sku": "SKU-1", "quantity": 2, "price": 19.99,
        "shipping_address": "1 Main Street, Springfield"}


@pytest.fixture
async def repo(tmp_path: Path) -> AsyncIterator[OrderRepository]:
    repo = await OrderRepository.open(tmp_path / "orders.db")
    yield repo
    await repo.close()


@pytest.fixture
def registry(repo: OrderRepository) -> ToolRegistry:
    registry = ToolRegistry(timeout=10)
    registry.add_many(order_tools(repo))
    return registry


async def ok(registry: ToolRegistry, name: str, args: dict[str, Any] | str, ctx: ToolContext = A) -> Any:
    result = await registry.call(name, args, ctx)
    assert result.ok, result.content
    return json.loads(result.content)


async def error(registry: ToolRegistry, name: str, args: dict[str, Any], ctx: ToolContext = A) -> str:
    result = await registry.call(name, args, ctx)
    assert not result.ok, result.content
    return json.loads(result.content)["error"]


async def create(registry: ToolRegistry, ctx: ToolContext = A, **changes: Any) -> dict[str, Any]:
    return (await ok(registry, "create_order", {**GOOD, **changes}, ctx))["order"]


def _keys(schema: Any) -> Iterator[str]:
    if isinstance(schema, dict):
        for key, value in schema.items():
            if key == "properties":
                yield from value
            yield from _keys(value)
    elif isinstance(schema, list):
        for item in schema:
            yield from _keys(item)


# --- schemas --------------------------------------------------------------------------------------


def test_the_six_tools_have_strict_schemas(repo: OrderRepository) -> None:
    tools = {t.name: t for t in order_tools(repo)}
    assert set(tools) == NAMES
    for tool in tools.values():
        schema = tool.parameters
        jsonschema.Draft202012Validator.check_schema(schema)
        assert schema["type"] == "object" and schema["additionalProperties"] is False
        assert set(schema["required"]) <= set(schema["properties"])
        assert not any("tenant" in key.lower() for key in _keys(schema)), tool.name
        assert len(tool.description) > 30 and tool.source == "local"
        json.dumps(tool.openai_schema())
    assert tools["update_order_status"].parameters["properties"]["status"]["enum"] == [
        "pending", "confirmed", "shipped", "delivered", "cancelled"]
    assert tools["search_orders"].parameters["properties"]["status"]["enum"][0] == "pending"
    assert tools["get_all_orders"].parameters["properties"]["limit"]["maximum"] == 500
    assert tools["create_order"].parameters["properties"]["quantity"]["minimum"] == 1
    assert tools["create_order"].parameters["properties"]["price"]["minimum"] == 0


async def test_a_tenant_argument_is_rejected(registry: ToolRegistry) -> None:
    message = await error(registry, "get_all_orders", {"tenant_id": "tenant-b"})
    assert "Additional properties are not allowed" in message and "tenant_id" in message


# --- create_order ---------------------------------------------------------------------------------


async def test_create_order(registry: ToolRegistry, repo: OrderRepository) -> None:
    order = await create(registry, notes="leave at the door")
    assert order["status"] == "pending" and order["total"] == 39.98 and order["notes"] == "leave at the door"
    assert await repo.get("tenant-a", order["order_id"]) == order


async def test_create_order_from_raw_json_arguments(registry: ToolRegistry) -> None:
    body = await ok(registry, "create_order", json.dumps({**GOOD, "quantity": 1, "price": 5}))
    assert (body["order"]["quantity"], body["order"]["total"]) == (1, 5.0)


@pytest.mark.parametrize(("changes", "expected"), [
    ({"quantity": 0}, "invalid arguments: quantity: 0 is less than the minimum of 1"),
    ({"quantity": -2}, "invalid arguments: quantity: -2 is less than the minimum of 1"),
    ({"quantity": 2.5}, "invalid arguments: quantity: 2.5 is not of type 'integer'"),
    ({"quantity": "3"}, "invalid arguments: quantity: '3' is not of type 'integer'"),
    ({"quantity": 10001}, "invalid arguments: quantity: 10001 is greater than the maximum of 10000"),
    ({"price": -1}, "invalid arguments: price: -1 is less than the minimum of 0"),
    ({"price": "9.99"}, "invalid arguments: price: '9.99' is not of type 'number'"),
    ({"price": 19.999}, "price must have at most 2 decimal places (whole cents), got 19.999"),
    ({"customer_id": ""}, "invalid arguments: customer_id: '' should be non-empty"),
    ({"customer_id": "   "}, "customer_id must not be empty"),
    ({"shipping_address": "\t"}, "shipping_address must not be empty"),
    ({"product_sku": "A\x00B"}, "product_sku must not contain control characters"),
    ({"status": "shipped"}, "invalid arguments: Additional properties are not allowed ('status' was unexpected)"),
])
async def test_create_order_rejects_bad_input(registry: ToolRegistry, repo: OrderRepository,
                                              changes: dict[str, Any], expected: str) -> None:
    assert await error(registry, "create_order", {**GOOD, **changes}) == expected
    assert await repo.count("tenant-a") == 0


@pytest.mark.parametrize("missing", ["customer_id", "product_sku", "quantity", "price", "shipping_address"])
async def test_create_order_needs_every_required_field(registry: ToolRegistry, missing: str) -> None:
    args = {k: v for k, v in GOOD.items() if k != missing}
    assert await error(registry, "create_order", args) == f"invalid arguments: '{missing}' is a required property"


# --- get_order_by_id ------------------------------------------------------------------------------


async def test_get_order_by_id(registry: ToolRegistry) -> None:
    order = await create(registry)
    assert await ok(registry, "get_order_by_id", {"order_id": order["order_id"].lower()}) == {"order": order}


async def test_get_order_by_id_unknown(registry: ToolRegistry) -> None:
    assert await error(registry, "get_order_by_id", {"order_id": "ORD-ZZZZZZZZ"}) == "no order ORD-ZZZZZZZZ found"
    assert "order ids look like ORD-" in await error(registry, "get_order_by_id", {"order_id": "42"})


async def test_get_order_by_id_needs_an_id(registry: ToolRegistry) -> None:
    assert await error(registry, "get_order_by_id", {}) == "invalid arguments: 'order_id' is a required property"


# --- get_orders_by_customer -------------------------------------------------------------------------


async def test_get_orders_by_customer(registry: ToolRegistry) -> None:
    first = await create(registry, customer_id="CUST-7")
    second = await create(registry, customer_id="CUST-7")
    await create(registry, customer_id="CUST-8")
    body = await ok(registry, "get_orders_by_customer", {"customer_id": "CUST-7"})
    assert body == {"customer_id": "CUST-7", "orders": [second, first], "count": 2}
    limited = await ok(registry, "get_orders_by_customer", {"customer_id": "CUST-7", "limit": 1})
    assert limited["orders"] == [second]


@pytest.mark.parametrize(("args", "expected"), [
    ({"customer_id": "CUST-7", "limit": 0}, "invalid arguments: limit: 0 is less than the minimum of 1"),
    ({"customer_id": "CUST-7", "limit": 501}, "invalid arguments: limit: 501 is greater than the maximum of 500"),
    ({"limit": 5}, "invalid arguments: 'customer_id' is a required property"),
    ({"customer_id": " "}, "customer_id must not be empty"),
])
async def test_get_orders_by_customer_rejects_bad_input(registry: ToolRegistry, args: dict[str, Any],
                                                        expected: str) -> None:
    assert await error(registry, "get_orders_by_customer", args) == expected


# --- search_orders --------------------------------------------------------------------------------


async def test_search_orders(registry: ToolRegistry) -> None:
    london = await create(registry, product_sku="MUG-RED", shipping_address="5 Fleet St, London")
    paris = await create(registry, product_sku="MUG-BLUE", shipping_address="9 Rue Cler, Paris")
    await ok(registry, "update_order_status", {"order_id": paris["order_id"], "status": "confirmed"})
    by_sku = await ok(registry, "search_orders", {"sku": "mug-red"})
    assert by_sku == {"orders": [london], "count": 1}
    by_address = await ok(registry, "search_orders", {"address": "paris"})
    assert [o["order_id"] for o in by_address["orders"]] == [paris["order_id"]]
    by_status = await ok(registry, "search_orders", {"status": "pending", "limit": 10})
    assert by_status["orders"] == [london]
    assert (await ok(registry, "search_orders", {"sku": "MUG-RED", "status": "confirmed"}))["count"] == 0


async def test_search_orders_matches_wildcards_literally(registry: ToolRegistry) -> None:
    percent = await create(registry, shipping_address="Unit 100% Road")
    await create(registry, shipping_address="Unit 1000 Road")
    under = await create(registry, shipping_address="Flat a_b Lane")
    await create(registry, shipping_address="Flat axb Lane")
    assert (await ok(registry, "search_orders", {"address": "100%"}))["orders"] == [percent]
    assert (await ok(registry, "search_orders", {"address": "a_b"}))["orders"] == [under]


@pytest.mark.parametrize(("args", "expected"), [
    ({}, "give at least one search criterion: sku, address or status"),
    ({"limit": 5}, "give at least one search criterion: sku, address or status"),
    ({"status": "lost"}, "invalid arguments: status: 'lost' is not one of ['pending', 'confirmed', "
                         "'shipped', 'delivered', 'cancelled']"),
    ({"sku": ""}, "invalid arguments: sku: '' should be non-empty"),
    ({"address": "   "}, "address must not be empty"),
    ({"status": "pending", "limit": 501}, "invalid arguments: limit: 501 is greater than the maximum of 500"),
    ({"customer": "CUST-1"}, "invalid arguments: Additional properties are not allowed ('customer' was unexpected)"),
])
async def test_search_orders_rejects_bad_input(registry: ToolRegistry, args: dict[str, Any], expected: str) -> None:
    assert await error(registry, "search_orders", args) == expected


# --- update_order_status ----------------------------------------------------------------------------


async def test_update_order_status(registry: ToolRegistry) -> None:
    order = await create(registry)
    body = await ok(registry, "update_order_status", {"order_id": order["order_id"], "status": "confirmed"})
    assert body["previous_status"] == "pending" and body["changed"] is True
    assert body["order"]["status"] == "confirmed" and "previous_status" not in body["order"]
    again = await ok(registry, "update_order_status", {"order_id": order["order_id"], "status": "confirmed"})
    assert again == {"order": body["order"], "previous_status": "confirmed", "changed": False}


async def test_update_order_status_refuses_a_disallowed_transition(registry: ToolRegistry) -> None:
    order = await create(registry)
    oid = order["order_id"]
    for status in ("confirmed", "shipped", "delivered"):
        await ok(registry, "update_order_status", {"order_id": oid, "status": status})
    message = await error(registry, "update_order_status", {"order_id": oid, "status": "pending"})
    assert message == f"order {oid} is delivered and cannot become pending; delivered is a final status"


async def test_update_order_status_explains_the_allowed_next_steps(registry: ToolRegistry) -> None:
    oid = (await create(registry))["order_id"]
    message = await error(registry, "update_order_status", {"order_id": oid, "status": "shipped"})
    assert message == f"order {oid} is pending and cannot become shipped; allowed next: confirmed, cancelled"


@pytest.mark.parametrize(("args", "expected"), [
    ({"order_id": "ORD-ZZZZZZZZ", "status": "confirmed"}, "no order ORD-ZZZZZZZZ found"),
    ({"order_id": "ORD-ZZZZZZZZ", "status": "returned"},
     "invalid arguments: status: 'returned' is not one of ['pending', 'confirmed', 'shipped', 'delivered', "
     "'cancelled']"),
    ({"order_id": "ORD-ZZZZZZZZ"}, "invalid arguments: 'status' is a required property"),
])
async def test_update_order_status_rejects_bad_input(registry: ToolRegistry, args: dict[str, Any],
                                                     expected: str) -> None:
    assert await error(registry, "update_order_status", args) == expected


# --- get_all_orders -------------------------------------------------------------------------------


async def test_get_all_orders(registry: ToolRegistry) -> None:
    made = [await create(registry, quantity=i) for i in range(1, 53)]
    body = await ok(registry, "get_all_orders", {})
    assert (body["count"], body["total"]) == (50, 52)
    assert body["orders"] == made[::-1][:50]
    assert (await ok(registry, "get_all_orders", {"limit": 3}))["orders"] == made[::-1][:3]
    assert (await ok(registry, "get_all_orders", {"limit": 500}))["count"] == 52


@pytest.mark.parametrize(("args", "expected"), [
    ({"limit": 0}, "invalid arguments: limit: 0 is less than the minimum of 1"),
    ({"limit": 501}, "invalid arguments: limit: 501 is greater than the maximum of 500"),
    ({"limit": "all"}, "invalid arguments: limit: 'all' is not of type 'integer'"),
])
async def test_get_all_orders_rejects_bad_input(registry: ToolRegistry, args: dict[str, Any], expected: str) -> None:
    assert await error(registry, "get_all_orders", args) == expected


# --- tenant isolation, concurrency ----------------------------------------------------------------


async def test_no_tool_reaches_another_tenants_orders(registry: ToolRegistry, repo: OrderRepository) -> None:
    mine = await create(registry, A, customer_id="CUST-1", product_sku="SKU-1", shipping_address="Oak Road")
    oid = mine["order_id"]
    assert await error(registry, "get_order_by_id", {"order_id": oid}, B) == f"no order {oid} found"
    assert await error(registry, "update_order_status", {"order_id": oid, "status": "cancelled"}, B) == (
        f"no order {oid} found")
    assert (await ok(registry, "get_orders_by_customer", {"customer_id": "CUST-1"}, B))["orders"] == []
    for criteria in ({"sku": "SKU-1"}, {"address": "Oak"}, {"status": "pending"}):
        assert (await ok(registry, "search_orders", criteria, B))["orders"] == []
    assert await ok(registry, "get_all_orders", {}, B) == {"orders": [], "count": 0, "total": 0}
    theirs = await create(registry, B, customer_id="CUST-1")
    assert (await ok(registry, "get_orders_by_customer", {"customer_id": "CUST-1"}, A))["orders"] == [mine]
    assert (await ok(registry, "get_all_orders", {}, B))["orders"] == [theirs]
    assert await repo.get("tenant-a", oid) == mine


async def test_fifty_concurrent_turns_create_fifty_orders(registry: ToolRegistry, repo: OrderRepository) -> None:
    contexts = [ToolContext("tenant-a", f"session-{i}", f"req-{i}") for i in range(50)]
    results = await asyncio.gather(*(registry.call("create_order", {**GOOD, "quantity": i + 1}, ctx)
                                     for i, ctx in enumerate(contexts)))
    assert all(r.ok for r in results), [r.content for r in results if not r.ok]
    assert len({json.loads(r.content)["order"]["order_id"] for r in results}) == 50
    assert (await ok(registry, "get_all_orders", {}))["total"] == 50
    assert await repo.count("tenant-a") == 50
