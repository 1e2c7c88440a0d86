"""The six order tools the agent may call.

The tenant always comes from the turn (``ctx.tenant_id``); no schema has a tenant argument, so a
model cannot reach another tenant's orders whatever it writes. Repository errors become
:class:`ToolError` with the same message, which tells the model what to fix.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any, TypeVar

from msev15.agent.tools.registry import ServiceUnavailable, Tool, ToolContext, ToolError
from msev15.mcpkit import capabilities as caps
from msev15.store.order_store import OrderStore
from msev15.store.orders import (
    DEFAULT_LIMIT,
    MAX_ADDRESS,
    MAX_CUSTOMER_ID,
    MAX_LIMIT,
    MAX_NOTES,
    MAX_PRICE,
    MAX_QUANTITY,
    MAX_SKU,
    STATUSES,
    OrderError,
    StoreUnavailable,
)

T = TypeVar("T")

_ORDER_ID = {"type": "string", "minLength": 1, "maxLength": 64,
             "description": "The order id, like ORD-7K3M9Q2X."}
_CUSTOMER_ID = {"type": "string", "minLength": 1, "maxLength": MAX_CUSTOMER_ID,
                "description": "The customer's id, like CUST-1001."}
_STATUS = {"type": "string", "enum": list(STATUSES)}
_LIMIT = {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT,
          "description": f"Most orders to return (default {DEFAULT_LIMIT}, at most {MAX_LIMIT})."}


def _schema(properties: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": list(required),
            "additionalProperties": False}


CREATE_SCHEMA = _schema({
    "customer_id": _CUSTOMER_ID,
    "product_sku": {"type": "string", "minLength": 1, "maxLength": MAX_SKU,
                    "description": "The product's SKU, like LAPTOP-PRO-14."},
    "quantity": {"type": "integer", "minimum": 1, "maximum": MAX_QUANTITY,
                 "description": "How many units (a whole number, at least 1)."},
    "price": {"type": "number", "minimum": 0, "maximum": float(MAX_PRICE),
              "description": "Unit price, at least 0, with at most 2 decimals (e.g. 19.99)."},
    "shipping_address": {"type": "string", "minLength": 1, "maxLength": MAX_ADDRESS,
                         "description": "Full shipping address."},
    "notes": {"type": "string", "maxLength": MAX_NOTES, "description": "Optional notes on the order."},
}, ("customer_id", "product_sku", "quantity", "price", "shipping_address"))
GET_SCHEMA = _schema({"order_id": _ORDER_ID}, ("order_id",))
BY_CUSTOMER_SCHEMA = _schema({"customer_id": _CUSTOMER_ID, "limit": _LIMIT}, ("customer_id",))
SEARCH_SCHEMA = _schema({
    "sku": {"type": "string", "minLength": 1, "maxLength": MAX_SKU,
            "description": "Exact product SKU (letter case is ignored)."},
    "address": {"type": "string", "minLength": 1, "maxLength": MAX_ADDRESS,
                "description": "Text that appears anywhere in the shipping address, e.g. a city or postcode."},
    "status": {**_STATUS, "description": "Only orders in this status."},
    "limit": _LIMIT,
})
UPDATE_SCHEMA = _schema({"order_id": _ORDER_ID, "status": {**_STATUS, "description": "The new status."}},
                        ("order_id", "status"))
ALL_SCHEMA = _schema({"limit": _LIMIT})


async def _call(work: Awaitable[T]) -> T:
    try:
        return await work
    except StoreUnavailable as exc:
        raise ServiceUnavailable("store_unavailable", str(exc)) from exc
    except OrderError as exc:
        raise ToolError(str(exc)) from exc


def order_tools(repo: OrderStore) -> list[Tool]:
    """The order tools bound to ``repo``, for ``ToolRegistry.add_many``."""

    async def create_order(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
        order = await _call(repo.create(
            ctx.tenant_id, args["customer_id"], args["product_sku"], args["quantity"], args["price"],
            args["shipping_address"], notes=args.get("notes")))
        return {"order": order}

    async def get_order_by_id(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
        return {"order": await _call(repo.get(ctx.tenant_id, args["order_id"]))}

    async def get_orders_by_customer(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
        orders = await _call(repo.by_customer(ctx.tenant_id, args["customer_id"],
                                              limit=args.get("limit", DEFAULT_LIMIT)))
        return {"customer_id": args["customer_id"], "orders": orders, "count": len(orders)}

    async def search_orders(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
        orders = await _call(repo.search(ctx.tenant_id, sku=args.get("sku"), address=args.get("address"),
                                         status=args.get("status"), limit=args.get("limit", DEFAULT_LIMIT)))
        return {"orders": orders, "count": len(orders)}

    async def update_order_status(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
        order = await _call(repo.update_status(ctx.tenant_id, args["order_id"], args["status"]))
        previous = order.pop("previous_status")
        return {"order": order, "previous_status": previous, "changed": previous != order["status"]}

    async def get_all_orders(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
        orders = await _call(repo.list_orders(ctx.tenant_id, limit=args.get("limit", DEFAULT_LIMIT)))
        total = await _call(repo.count(ctx.tenant_id))
        return {"orders": orders, "count": len(orders), "total": total}

    return [
        Tool("create_order",
             "Create a new order for a customer. New orders start as 'pending'. Returns the order "
             "with its id (ORD-XXXXXXXX), unit price and total. Ask the customer for any missing "
             "required detail rather than guessing it.",
             CREATE_SCHEMA, create_order, capability=caps.ORDER_CREATE),
        Tool("get_order_by_id",
             "Look up one order by its id (like ORD-7K3M9Q2X): customer, product, quantity, price, "
             "total, shipping address, status, notes and timestamps.",
             GET_SCHEMA, get_order_by_id, capability=caps.ORDER_LOOKUP),
        Tool("get_orders_by_customer",
             "List one customer's orders, newest first.",
             BY_CUSTOMER_SCHEMA, get_orders_by_customer, capability=caps.ORDERS_OF_CUSTOMER),
        Tool("search_orders",
             "Find orders by product SKU (exact), by text in the shipping address, and/or by status. "
             "Give at least one of sku, address, status; several must all match. Newest first.",
             SEARCH_SCHEMA, search_orders, capability=caps.ORDER_SEARCH),
        Tool("update_order_status",
             "Change an order's status. Allowed: pending -> confirmed or cancelled; confirmed -> "
             "shipped or cancelled; shipped -> delivered. delivered and cancelled are final. "
             "Setting the status the order already has changes nothing (changed: false).",
             UPDATE_SCHEMA, update_order_status, capability=caps.ORDER_SET_STATUS),
        Tool("get_all_orders",
             f"List the most recent orders, newest first (default {DEFAULT_LIMIT}, at most "
             f"{MAX_LIMIT}), with the total number of orders.",
             ALL_SCHEMA, get_all_orders, capability=caps.ORDER_LIST),
    ]
