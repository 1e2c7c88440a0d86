"""What every order store offers (the order tools, readiness and metrics use only this):
:class:`~msev15.store.orders.OrderRepository` (SQLite, ``ORDER_DB_PATH``) and
:class:`~msev15.store.pg_orders.PostgresOrders` (``DATABASE_URL``). The topology builds the one
the settings name and publishes it as ``ORDERS`` (``store/context.py``)."""

from __future__ import annotations

from decimal import Decimal
from typing import Protocol

from msev15.store.order_values import DEFAULT_LIMIT, Order, OrderList


class OrderStore(Protocol):
    # Why the last write failed, until a write succeeds (readiness says not_ready meanwhile).
    write_failure: str | None

    async def create(self, tenant_id: str, customer_id: str, product_sku: str, quantity: int,
                     price: float | int | Decimal | str, shipping_address: str,
                     status: str = "pending", notes: str | None = None) -> Order: ...

    async def update_status(self, tenant_id: str, order_id: str, new_status: str) -> Order: ...

    async def seed_demo_orders(self, tenant_id: str = ...) -> int: ...

    async def get(self, tenant_id: str, order_id: str) -> Order: ...

    async def by_customer(self, tenant_id: str, customer_id: str, limit: int = DEFAULT_LIMIT) -> OrderList: ...

    async def search(self, tenant_id: str, *, sku: str | None = None, address: str | None = None,
                     status: str | None = None, limit: int = DEFAULT_LIMIT) -> OrderList: ...

    async def list_orders(self, tenant_id: str, limit: int = DEFAULT_LIMIT) -> OrderList: ...

    async def count(self, tenant_id: str) -> int: ...

    async def ping(self) -> None: ...

    async def probe_write(self) -> bool: ...

    async def close(self) -> None: ...
