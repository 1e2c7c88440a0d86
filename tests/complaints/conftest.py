"""Fixtures for the complaints server and the MCP client tests (helpers live in ``server.py``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from .server import McpTestServer, running_complaints_server


@pytest.fixture
def complaints_db(tmp_path: Path) -> Path:
    return tmp_path / "complaints.db"


@pytest.fixture
async def complaints_server(complaints_db: Path) -> AsyncIterator[McpTestServer]:
    async with running_complaints_server(complaints_db) as server:
        yield server
