"""Roles: what a credential may do within its tenant.

Three roles, each including the one before it: ``customer`` (the chat API), ``operator`` (also
the handoff routes, any session of the tenant, decisions on pending tool calls) and ``admin``
(everything of the tenant). A credential that names no role, or only roles we do not know, is a
``customer``: an unknown word never grants more.
"""

from __future__ import annotations

from collections.abc import Iterable

ROLES = ("customer", "operator", "admin")
DEFAULT_ROLE = "customer"
_RANK = {role: rank for rank, role in enumerate(ROLES)}


def check_role(value: object) -> str:
    """``value`` if it is a role; ValueError naming the roles otherwise."""
    if isinstance(value, str) and value in _RANK:
        return value
    raise ValueError(f"role must be one of {', '.join(ROLES)}")


def allows(role: str, needed: str) -> bool:
    """Whether ``role`` may do what ``needed`` may (roles are ordered; unknown ranks lowest)."""
    return _RANK.get(role, -1) >= _RANK[needed]


def highest(claimed: object) -> str:
    """The highest known role among ``claimed`` (a string, or a list of strings as JWTs carry
    them); :data:`DEFAULT_ROLE` when none is known."""
    names: Iterable[object] = [claimed] if isinstance(claimed, str) else (
        claimed if isinstance(claimed, (list, tuple)) else ())
    known = [n for n in names if isinstance(n, str) and n in _RANK]
    return max(known, key=_RANK.__getitem__, default=DEFAULT_ROLE)
