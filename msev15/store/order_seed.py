"""The demo orders ``ORDER_DB_SEED`` puts in the ``default`` tenant: data, apart from the repository
(store/orders.py) that writes it. Times are ages relative to the moment of seeding."""

from __future__ import annotations

from datetime import timedelta

DEMO_TENANT = "default"

_DAY = timedelta(days=1)
# (age at creation, age at last update, customer, sku, quantity, price, address, status, notes)
DEMO_ORDERS: tuple[tuple[timedelta, timedelta, str, str, int, str, str, str, str | None], ...] = (
    (14 * _DAY, 9 * _DAY, "CUST-1001", "LAPTOP-PRO-14", 1, "1299.00",
     "12 Harbour Road, Bristol BS1 5TY, United Kingdom", "delivered", "Gift wrap requested"),
    (5 * _DAY, 2 * _DAY, "CUST-1001", "USB-C-HUB-7IN1", 2, "49.99",
     "12 Harbour Road, Bristol BS1 5TY, United Kingdom", "shipped", None),
    (3 * _DAY, 2 * _DAY, "CUST-1002", "HEADPHONES-NC700", 1, "279.50",
     "450 Market Street, Apt 8, San Francisco, CA 94105, USA", "confirmed", None),
    (2 * _DAY, 1 * _DAY, "CUST-1002", "PHONE-CASE-M", 1, "19.99",
     "450 Market Street, Apt 8, San Francisco, CA 94105, USA", "cancelled", "Customer changed their mind"),
    (_DAY / 8, _DAY / 8, "CUST-1003", "COFFEE-BEANS-1KG", 3, "24.90",
     "Hauptstrasse 5, 10115 Berlin, Germany", "pending", "Leave with the neighbour if nobody is home"),
)
