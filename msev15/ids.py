"""Cheap unique ids for requests and turns.

A random per-process prefix plus a counter: unique across processes (and forks) without an
``os.urandom`` call per id, which showed up in profiles of the chat path.
"""

from __future__ import annotations

import itertools
import os

_state: tuple[int, str, itertools.count[int]] | None = None


def new_id() -> str:
    """32 hex characters: 16 of per-process randomness, 16 of counter."""
    global _state
    pid = os.getpid()
    if _state is None or _state[0] != pid:
        _state = (pid, os.urandom(8).hex(), itertools.count(1))
    return f"{_state[1]}{next(_state[2]):016x}"
