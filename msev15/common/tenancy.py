"""Tenant ids: one rule for the service, its stores and its MCP servers.

The service takes the tenant from the request (``tenant_id``, default ``"default"``), never
from the model. MCP tool calls carry it out of band, in the request's ``_meta`` under
:data:`TENANT_META_KEY`, so no tool schema ever offers a tenant argument; the project's MCP
servers read it back with :func:`tenant_from_meta`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

DEFAULT_TENANT = "default"
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$"
ID_RE = re.compile(ID_PATTERN)
TENANT_META_KEY = "msev15/tenant_id"  # prefixed: MCP reserves unprefixed _meta keys


def check_tenant(raw: object) -> str:
    """``raw`` unchanged if it is a valid tenant id; ValueError with a clear sentence otherwise."""
    if not isinstance(raw, str):
        raise ValueError(f"tenant_id must be a string, got {type(raw).__name__}")
    if not ID_RE.fullmatch(raw):  # fullmatch: "$" alone would accept a trailing newline
        shown = raw if len(raw) <= 140 else raw[:137] + "..."
        raise ValueError("tenant_id must be 1-128 characters: letters, digits and . _ : @ - (starting with a "
                         f"letter or digit), got {shown!r}")
    return raw


def tenant_from_meta(meta: Mapping[str, Any] | None) -> str:
    """The calling tenant from an MCP request's ``_meta``; :data:`DEFAULT_TENANT` without the key.

    A present but invalid value raises ValueError: it is never quietly taken as "default".
    """
    meta = meta or {}
    if TENANT_META_KEY not in meta:
        return DEFAULT_TENANT
    try:
        return check_tenant(meta[TENANT_META_KEY])
    except ValueError as exc:
        raise ValueError(f"{exc} (from _meta[{TENANT_META_KEY!r}])") from None
