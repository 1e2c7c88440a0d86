"""The complaint record, its vocabularies and the legal status changes.

``Complaint`` is a frozen pydantic model rather than a dataclass because the MCP server derives
each tool's output schema from it; the field descriptions are what a client (or a model) reads.
"""

from __future__ import annotations

import re
from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

from msev15.common.tenancy import DEFAULT_TENANT as DEFAULT_TENANT  # re-exported
from msev15.common.tenancy import ID_RE as _TENANT_RE
from msev15.common.tenancy import check_tenant as _check_tenant

Category = Literal["product", "delivery", "billing", "service", "other"]
Priority = Literal["low", "medium", "high", "urgent"]
Status = Literal["open", "in_progress", "resolved", "archived"]

CATEGORIES: tuple[str, ...] = get_args(Category)
PRIORITIES: tuple[str, ...] = get_args(Priority)
STATUSES: tuple[str, ...] = get_args(Status)

# Where each status may go next. "open" is only ever a starting point; a resolved complaint can be
# reopened (back to in_progress); an archived one is final.
TRANSITIONS: dict[str, frozenset[str]] = {
    "open": frozenset({"in_progress", "resolved", "archived"}),
    "in_progress": frozenset({"resolved", "archived"}),
    "resolved": frozenset({"archived", "in_progress"}),
    "archived": frozenset(),
}

ID_PREFIX = "CMP-"
ID_RE = re.compile(r"^CMP-[0-9A-F]{8}$")

MAX_ID_CHARS = 64
MAX_TEXT_CHARS = 4000

# Tenants: the service's id rule and default tenant, so a tenant the service accepts is one this
# server accepts (and nothing else). Calls that carry no tenant belong to DEFAULT_TENANT.
TENANT_ID_RE = _TENANT_RE  # the service's id rule (msev15.common.tenancy)


class ComplaintError(ValueError):
    """A request the store refuses; the message is written for the caller to read."""


class ComplaintNotFound(ComplaintError):
    def __init__(self, complaint_id: str) -> None:
        super().__init__(f"complaint {complaint_id} not found")
        self.complaint_id = complaint_id


class IllegalTransition(ComplaintError):
    def __init__(self, complaint_id: str, current: str, wanted: str) -> None:
        allowed = sorted(TRANSITIONS[current])
        options = ", ".join(allowed) if allowed else "none: archived complaints are final"
        super().__init__(
            f"cannot change complaint {complaint_id} from {current} to {wanted} (allowed from {current}: {options})"
        )
        self.current = current
        self.wanted = wanted


def check_transition(complaint_id: str, current: str, wanted: str) -> None:
    """Raise :class:`IllegalTransition` unless ``current -> wanted`` is allowed."""
    if wanted not in TRANSITIONS[current]:
        raise IllegalTransition(complaint_id, current, wanted)


def check_tenant(raw: object) -> str:
    """The tenant id unchanged if it follows the service's id rule; a ComplaintError otherwise."""
    try:
        return _check_tenant(raw)
    except ValueError as exc:
        raise ComplaintError(str(exc)) from None


def normalize_id(raw: str) -> str:
    """``cmp-1a2b3c4d`` -> ``CMP-1A2B3C4D``; a clear error for anything that is not an id."""
    value = raw.strip().upper()
    if not ID_RE.match(value):
        raise ComplaintError(f"complaint_id must look like CMP-1A2B3C4D, got {raw!r}")
    return value


class Complaint(BaseModel):
    """One customer complaint as stored and as returned by every tool."""

    model_config = ConfigDict(frozen=True)

    id: str = Field(description="Complaint id, e.g. CMP-1A2B3C4D.")
    customer_id: str = Field(description="The customer who complained.")
    order_id: str | None = Field(default=None, description="The order concerned, if any.")
    category: Category = Field(description="product, delivery, billing, service or other.")
    description: str = Field(description="What the customer reported.")
    priority: Priority = Field(description="low, medium, high or urgent.")
    status: Status = Field(description="open, in_progress, resolved or archived.")
    resolution: str | None = Field(default=None, description="How it was resolved, once resolved.")
    created_at: str = Field(description="ISO 8601 UTC time of registration.")
    updated_at: str = Field(description="ISO 8601 UTC time of the last change.")
    resolved_at: str | None = Field(default=None, description="When it was (last) resolved.")
    archived_at: str | None = Field(default=None, description="When it was archived.")


class SearchResult(BaseModel):
    """A page of complaints matching a search, newest first."""

    model_config = ConfigDict(frozen=True)

    complaints: list[Complaint] = Field(description="The matching complaints, newest first.")
    count: int = Field(description="How many complaints are in this page.")
    total: int = Field(description="How many complaints match in all.")
