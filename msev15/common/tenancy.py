"""Tenant ids: one rule for the service, its stores and its MCP servers.

The service takes the tenant from the request (``tenant_id``, default ``"default"``), never
from the model. MCP tool calls carry it out of band, in ``_meta`` (see :mod:`msev15.mcpkit.meta`).
"""

from __future__ import annotations

import re

DEFAULT_TENANT = "default"
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$"
ID_RE = re.compile(ID_PATTERN)
ID_RULE = "1-128 characters: letters, digits and . _ : @ - (starting with a letter or digit)"


class TenantIdError(ValueError):
    """A tenant id that breaks the rule. ``rule`` is the sentence without the offending value
    (what an HTTP API answers); ``str()`` adds the value."""

    def __init__(self, rule: str, got: str) -> None:
        super().__init__(f"{rule}, got {got}")
        self.rule = rule


def check_tenant(raw: object) -> str:
    """``raw`` unchanged if it is a valid tenant id; :class:`TenantIdError` otherwise."""
    if not isinstance(raw, str):
        raise TenantIdError("tenant_id must be a string", type(raw).__name__)
    if not ID_RE.fullmatch(raw):  # fullmatch: "$" alone would accept a trailing newline
        shown = raw if len(raw) <= 140 else raw[:137] + "..."
        raise TenantIdError(f"tenant_id must be {ID_RULE}", repr(shown))
    return raw
