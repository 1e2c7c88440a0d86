"""Tenant ids: one rule for the service, its stores and its MCP servers.

The service takes the tenant from the request (``tenant_id``, default ``"default"``), never
from the model. MCP tool calls carry it out of band, in ``_meta`` (see :mod:`msev15.mcpkit.meta`).
"""

from __future__ import annotations

import re

DEFAULT_TENANT = "default"
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$"
ID_RE = re.compile(ID_PATTERN)


def check_tenant(raw: object) -> str:
    """``raw`` unchanged if it is a valid tenant id; ValueError with a clear sentence otherwise."""
    if not isinstance(raw, str):
        raise ValueError(f"tenant_id must be a string, got {type(raw).__name__}")
    if not ID_RE.fullmatch(raw):  # fullmatch: "$" alone would accept a trailing newline
        shown = raw if len(raw) <= 140 else raw[:137] + "..."
        raise ValueError("tenant_id must be 1-128 characters: letters, digits and . _ : @ - (starting with a "
                         f"letter or digit), got {shown!r}")
    return raw
