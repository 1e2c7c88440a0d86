"""Our ``_meta`` contract: who is calling (the tenant) and the call's idempotency key.

Both travel in the request's ``_meta``, never in tool arguments: tool schemas are shown to the
model, and a tenant argument would let a prompt pick any tenant. The keys are prefixed because MCP
reserves unprefixed ``_meta`` keys.

Tenant
    The service sets :data:`TENANT_META_KEY` from the turn; the project's MCP servers read it
    back with :func:`tenant_from_meta` (the one rule of :mod:`msev15.common.tenancy`). A call
    without it works in tenant ``"default"``.

Idempotency keys: a retried MCP tool call must not act twice
    The service's MCP client retries a call once when the connection drops under it (see
    :meth:`msev15.agent.mcp_client.McpConnection.call_tool`). The first attempt may have run on the
    server before the connection went, so every call carries a fresh key under
    :data:`IDEMPOTENCY_META_KEY`, and the retry carries the same key.

    The project's MCP servers keep the keys of the calls that changed something (per tenant, for
    :data:`RETENTION_SECONDS`, in the same SQLite transaction as the change). A call whose key they
    already hold does not act again: it answers with what the first call did. A key reused for
    another tool is refused. Calls without a key (other clients, other MCP servers) behave as before.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from msev15.common.tenancy import DEFAULT_TENANT, check_tenant

TENANT_META_KEY = "msev15/tenant_id"
IDEMPOTENCY_META_KEY = "msev15/idempotency_key"
RETENTION_SECONDS = 24 * 3600
KEY_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")


def tenant_from_meta(meta: Mapping[str, Any] | None) -> str:
    """The calling tenant from an MCP request's ``_meta``; ``"default"`` without the key.

    A present but invalid value raises ValueError: it is never quietly taken as "default".
    """
    meta = meta or {}
    if TENANT_META_KEY not in meta:
        return DEFAULT_TENANT
    try:
        return check_tenant(meta[TENANT_META_KEY])
    except ValueError as exc:
        raise ValueError(f"{exc} (from _meta[{TENANT_META_KEY!r}])") from None


def idempotency_key_from_meta(meta: Mapping[str, Any] | None) -> str | None:
    """The call's idempotency key from an MCP request's ``_meta``; None without one.

    A present but malformed key raises ValueError (a sentence naming the key): it is never
    quietly dropped, which would let a retry act twice.
    """
    meta = meta or {}
    if IDEMPOTENCY_META_KEY not in meta:
        return None
    raw = meta[IDEMPOTENCY_META_KEY]
    if not isinstance(raw, str) or not KEY_RE.fullmatch(raw):
        shown = repr(raw) if len(repr(raw)) <= 80 else repr(raw)[:77] + "..."
        raise ValueError(f"_meta[{IDEMPOTENCY_META_KEY!r}] must be 1-128 characters: letters, digits and "
                         f". _ : - (starting with a letter or digit), got {shown}")
    return raw
