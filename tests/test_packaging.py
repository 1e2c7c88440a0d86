"""A clean checkout builds without setuptools warnings, and the wheel carries the static assets
(the playground and ReDoc pages are served from the installed package, not from the checkout)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ASSETS = ("msev15/handlers/static/playground/index.html", "msev15/handlers/static/playground/playground.js",
          "msev15/handlers/static/redoc/redoc.standalone.js", "msev15/handlers/static/console/console.js",
          "msev15/handlers/static/playground/sse.js",
          "msev15/py.typed", "msev15/evals/scenario.schema.json")


def _clean_copy(target: Path) -> Path:
    """The files git tracks (a fresh clone's tree), without build or cache leftovers."""
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=False)
    if listed.returncode != 0:
        pytest.skip("not a git checkout")
    for name in listed.stdout.decode().split("\0"):
        if name and (ROOT / name).is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, target / name)
    return target


def test_the_wheel_builds_without_warnings_and_carries_the_static_assets(tmp_path: Path) -> None:
    source = _clean_copy(tmp_path / "src")
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "-v",
         "-w", str(tmp_path / "dist")], capture_output=True, text=True, timeout=300, check=False)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    output = built.stdout + built.stderr
    assert "Package would be ignored" not in output
    assert "SetuptoolsDeprecationWarning" not in output
    wheel = next((tmp_path / "dist").glob("msev15e2e-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = [asset for asset in ASSETS if asset not in names]
    assert missing == [], f"the wheel lacks {missing}"
    assert not any("__pycache__" in name for name in names)

    # The installed package (the wheel's files, not this checkout) serves the playground and ReDoc.
    installed = tmp_path / "installed"
    zipfile.ZipFile(wheel).extractall(installed)
    served = subprocess.run([sys.executable, "-c", _SERVE_FROM_INSTALLED, str(tmp_path / "data")],
                            env={**os.environ, "PYTHONPATH": str(installed)}, cwd=tmp_path,
                            capture_output=True, text=True, timeout=120, check=False)
    assert served.returncode == 0, served.stdout + served.stderr
    assert served.stdout.split() == [str(installed / "msev15" / "__init__.py"), "200", "200", "200"]


# Imports msev15 from PYTHONPATH, builds the app and fetches three static pages.
_SERVE_FROM_INSTALLED = """
import asyncio, sys
from pathlib import Path
import msev15
from aiohttp.test_utils import TestClient, TestServer
from msev15.app import create_app
from msev15.config import Settings

async def main():
    data = Path(sys.argv[1])
    settings = Settings.defaults(mcp_server_url="", log_to_file=False, llm_provider="offline",
                                 order_db_path=str(data / "orders.db"), email_outbox_dir=str(data / "outbox"))
    async with TestClient(TestServer(await create_app(settings))) as client:
        codes = [(await client.get(path)).status for path in
                 ("/", "/playground/static/playground.js", "/redoc/static/redoc.standalone.js")]
    print(msev15.__file__, *codes)

asyncio.run(main())
"""
