"""Request and turn ids: unique, 32 hex characters, and fresh in a forked child."""

from __future__ import annotations

import os
import re
import warnings

from msev15.common.ids import new_id


def test_ids_are_unique_hex() -> None:
    ids = {new_id() for _ in range(10_000)}
    assert len(ids) == 10_000
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids)


def test_a_forked_child_gets_its_own_prefix() -> None:
    parent = new_id()
    read, write = os.pipe()
    with warnings.catch_warnings():  # Python 3.12+ warns about fork() in a threaded process
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # pragma: no cover - the child only reports back
        os.write(write, new_id().encode())
        os._exit(0)
    os.close(write)
    child = os.read(read, 64).decode()
    os.close(read)
    os.waitpid(pid, 0)
    assert child[:16] != parent[:16]
