"""The real AG-UI and AI SDK clients (Node, ``tests/js``) against the service on a loopback port.

``make test`` installs ``tests/js`` with ``npm ci``; without Node the test is skipped and says so.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

import pytest
from aiohttp.test_utils import TestServer

from msev15.app import create_app
from tests.conftest import make_settings

JS = Path(__file__).parent / "js"
NODE_TIMEOUT_SECONDS = 120


def _node_or_skip() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.skip("Node.js is not installed: the AG-UI and AI SDK client tests (tests/js) did not run")
    if not (JS / "node_modules").is_dir():
        message = "tests/js is not installed: run `make test` (it runs `npm ci --prefix tests/js`)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return node


async def test_ag_ui_and_ai_sdk_clients(tmp_path: Path) -> None:
    node = _node_or_skip()
    app = await create_app(make_settings(tmp_path, order_db_seed=True))
    async with TestServer(app, host="127.0.0.1") as server:
        proc = await asyncio.create_subprocess_exec(
            node, "--test", "--test-reporter=spec", "--test-concurrency=1", cwd=JS,
            env={**os.environ, "MSEV15_URL": str(server.make_url("")).rstrip("/"), "NO_COLOR": "1"},
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), NODE_TIMEOUT_SECONDS)
        except TimeoutError:
            proc.kill()
            out, _ = await proc.communicate()
            pytest.fail(f"node --test did not finish within {NODE_TIMEOUT_SECONDS} s:\n{out.decode()}")
    output = out.decode()
    assert proc.returncode == 0, f"node --test failed (exit {proc.returncode}):\n{output}"
    assert "fail 0" in output, output
