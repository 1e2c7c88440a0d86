"""Cheap unique ids for requests and turns.

A random per-process prefix plus a counter: unique across processes without an
``os.urandom`` call per id (which showed up in profiles of the chat path). A forked child
draws a new prefix, so ids stay unique after a fork too.
"""

from __future__ import annotations

import itertools
import os

_prefix: str | None = None
_counter = itertools.count(1)


def _reset() -> None:
    global _prefix, _counter
    _prefix = None
    _counter = itertools.count(1)


os.register_at_fork(after_in_child=_reset)


def new_id() -> str:
    """32 hex characters: 16 of per-process randomness, 16 of counter."""
    global _prefix
    if _prefix is None:
        _prefix = os.urandom(8).hex()
    return f"{_prefix}{next(_counter):016x}"
