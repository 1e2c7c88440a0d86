"""Order values: statuses and their transitions, limits, the order errors, argument validation,
and the conversion of a stored row into the order a caller sees.

Every ``check_*`` function returns the normalised value or raises :class:`OrderValidationError`
(a malformed order id raises :class:`OrderNotFound` instead: it cannot name an order). The
store's contract (money, timestamps, ids, statuses) is described in :mod:`msev15.store.orders`.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from types import MappingProxyType
from typing import Any, Literal, get_args

from msev15.common.tenancy import check_tenant as _check_tenant

OrderStatus = Literal["pending", "confirmed", "shipped", "delivered", "cancelled"]
STATUSES: tuple[OrderStatus, ...] = get_args(OrderStatus)
TRANSITIONS: Mapping[OrderStatus, frozenset[OrderStatus]] = MappingProxyType({
    "pending": frozenset({"confirmed", "cancelled"}),
    "confirmed": frozenset({"shipped", "cancelled"}),
    "shipped": frozenset({"delivered"}),
    "delivered": frozenset(),
    "cancelled": frozenset(),
})
DEFAULT_LIMIT = 50
MAX_LIMIT = 500
MAX_QUANTITY = 10_000
MAX_PRICE = Decimal("1000000")
MAX_CUSTOMER_ID, MAX_SKU, MAX_ADDRESS, MAX_NOTES, MAX_TENANT_ID = 100, 64, 500, 2000, 128
ID_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford base32
ID_RE = re.compile(r"ORD-[0-9A-Z]{8}")

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_CONTROL_EXCEPT_NEWLINES = re.compile(r"[\x00-\x09\x0b\x0c\x0e-\x1f\x7f]")

Order = dict[str, Any]
OrderList = list[Order]


class OrderError(Exception):
    """Base of the order errors; ``str(error)`` is a message a caller (or a model) can act on."""


class StoreUnavailable(OrderError):
    """The database refused a write (disk full, read-only file, I/O error): the service, not the
    request, is at fault, and a retry later may succeed."""


class OrderValidationError(OrderError, ValueError):
    """An argument is missing, malformed or out of range."""


class OrderNotFound(OrderError, LookupError):
    """No order with that id exists for this tenant (another tenant's order is not found either)."""


class InvalidTransition(OrderError):
    """The order's current status does not allow the requested one."""


# --- validation ----------------------------------------------------------------------------------


def check_tenant(value: object) -> str:
    """The service's tenant id rule (:mod:`msev15.common.tenancy`), as an OrderValidationError."""
    try:
        return _check_tenant(value)
    except ValueError as exc:
        raise OrderValidationError(str(exc)) from None


def check_text(name: str, value: object, max_len: int, *, newlines: bool = False) -> str:
    if not isinstance(value, str):
        raise OrderValidationError(f"{name} must be text, got {type(value).__name__}")
    text = value.strip()
    if not text:
        raise OrderValidationError(f"{name} must not be empty")
    if len(text) > max_len:
        raise OrderValidationError(f"{name} must be at most {max_len} characters, got {len(text)}")
    if (_CONTROL_EXCEPT_NEWLINES if newlines else _CONTROL).search(text):
        raise OrderValidationError(f"{name} must not contain control characters")
    return text


def check_notes(value: object) -> str | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    return check_text("notes", value, MAX_NOTES, newlines=True)


def check_quantity(value: object) -> int:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_QUANTITY:
        raise OrderValidationError(f"quantity must be a whole number from 1 to {MAX_QUANTITY}, got {value!r}")
    return value


def to_cents(value: object) -> int:
    """Price to integer cents, exactly: 19.99 is 1999 cents, never 1998.9999."""
    amount: Decimal | None = None
    if isinstance(value, Decimal):
        amount = value
    elif isinstance(value, (int, float, str)) and not isinstance(value, bool):
        try:
            amount = Decimal(str(value).strip())  # str() of a float is its shortest repr
        except InvalidOperation:
            amount = None
    if amount is None or not amount.is_finite() or not 0 <= amount <= MAX_PRICE:
        raise OrderValidationError(f"price must be a number from 0 to {MAX_PRICE}, got {value!r}")
    cents = amount * 100
    if cents != cents.to_integral_value():
        raise OrderValidationError(f"price must have at most 2 decimal places (whole cents), got {value!r}")
    return int(cents)


def check_status(value: object) -> OrderStatus:
    text = value.strip().lower() if isinstance(value, str) else None
    for status in STATUSES:
        if text == status:
            return status
    raise OrderValidationError(f"unknown status {value!r}; use one of: {', '.join(STATUSES)}")


def check_limit(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_LIMIT:
        raise OrderValidationError(f"limit must be a whole number from 1 to {MAX_LIMIT}, got {value!r}")
    return value


def check_order_id(value: object) -> str:
    oid = value.strip().upper() if isinstance(value, str) else ""
    if not ID_RE.fullmatch(oid):
        raise OrderNotFound(f"no order {value!r} found; order ids look like ORD-7K3M9Q2X")
    return oid


def transition_message(oid: str, previous: OrderStatus, new: OrderStatus) -> str:
    allowed = [s for s in STATUSES if s in TRANSITIONS[previous]]
    hint = f"allowed next: {', '.join(allowed)}" if allowed else f"{previous} is a final status"
    return f"order {oid} is {previous} and cannot become {new}; {hint}"


# --- conversion ----------------------------------------------------------------------------------


def escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def iso_utc(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def now_iso() -> str:
    return iso_utc(datetime.now(UTC))


def _money(cents: int) -> float:
    return round(cents / 100, 2)


def order_from_row(row: sqlite3.Row) -> Order:
    return {
        "order_id": row["order_id"],
        "customer_id": row["customer_id"],
        "product_sku": row["product_sku"],
        "quantity": row["quantity"],
        "price": _money(row["price_cents"]),
        "total": _money(row["price_cents"] * row["quantity"]),
        "shipping_address": row["shipping_address"],
        "status": row["status"],
        "notes": row["notes"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
    }
