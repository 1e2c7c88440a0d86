"""The package layout, enforced: what the shared kits and the two products may import from ``msev15``.

The MCP servers (``complaints/``, ``escalation/``) share ``common/``, ``mcpkit/`` and the log
writer (``logs/writer.py``) with the service and nothing else, so they can be read, tested and
shipped without the service's layers;
the kits themselves never reach into the service. Every import is checked, at any depth
(function-level ones too), relative ones resolved, ``from msev15 import x`` read as ``msev15.x``
(so only ``__version__`` comes from the package root).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

import msev15

PACKAGE_ROOT = Path(msev15.__file__).parent
VERSION = "msev15.__version__"

# package -> what it may import from msev15 (its own modules included)
ALLOWED: dict[str, tuple[str, ...]] = {
    "complaints": ("msev15.common", "msev15.mcpkit", "msev15.logs.writer", "msev15.complaints", VERSION),
    "escalation": ("msev15.common", "msev15.mcpkit", "msev15.logs.writer", "msev15.escalation", VERSION),
    "mcpkit": ("msev15.common", "msev15.mcpkit"),
    "common": ("msev15.common",),
}


def msev15_imports(source: str, package: str) -> Iterator[tuple[int, str]]:
    """(line, module) for every import of an ``msev15`` module in ``source``, a module of
    ``package`` (dotted, used to resolve relative imports)."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            # Each name may be a module ("from msev15 import keys"): take it as base.name.
            names = [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        yield from ((node.lineno, name) for name in names if name == "msev15" or name.startswith("msev15."))


def _allowed(name: str, allowed: tuple[str, ...]) -> bool:
    return any(name == prefix or name.startswith(prefix + ".") for prefix in allowed)


def crossings(package: str) -> list[str]:
    """``file:line imports module`` for every import ``package`` may not make."""
    files = sorted((PACKAGE_ROOT / package).rglob("*.py"))
    assert files, f"no modules found under msev15/{package}"
    found = []
    for path in files:
        dotted = ".".join(path.parent.relative_to(PACKAGE_ROOT.parent).parts)
        for line, name in msev15_imports(path.read_text(encoding="utf-8"), dotted):
            if not _allowed(name, ALLOWED[package]):
                found.append(f"msev15/{path.relative_to(PACKAGE_ROOT).as_posix()}:{line} imports {name}")
    return found


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_package_imports_only_what_the_layout_allows(package: str) -> None:
    found = crossings(package)
    assert not found, (f"msev15/{package}/ may import only {', '.join(ALLOWED[package])}; found:\n  "
                       + "\n  ".join(found))


def test_every_form_of_import_is_seen() -> None:
    source = ("from msev15 import __version__, keys\n"
              "from .. import config\n"
              "from . import models\n"
              "from .delivery import deliver\n"
              "def f():\n"
              "    import msev15.handlers.chat\n"
              "    from msev15.store.sessions import SessionStore\n")
    found = sorted(msev15_imports(source, "msev15.escalation"))
    assert found == [(1, "msev15.__version__"), (1, "msev15.keys"), (2, "msev15.config"),
                     (3, "msev15.escalation.models"), (4, "msev15.escalation.delivery.deliver"),
                     (6, "msev15.handlers.chat"), (7, "msev15.store.sessions.SessionStore")]
    assert [name for _, name in found if not _allowed(name, ALLOWED["escalation"])] == [
        "msev15.keys", "msev15.config", "msev15.handlers.chat", "msev15.store.sessions.SessionStore"]


_LOADED_AT_START = """
import asyncio, json, sys, tempfile
from aiohttp import web
from msev15.app import create_app
from msev15.config import Settings

async def main(mcp_url):
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings.defaults(llm_provider="offline", mcp_server_url=mcp_url, log_to_file=False,
                                     order_db_path=f"{tmp}/orders.db", email_outbox_dir=f"{tmp}/outbox",
                                     email_attachments_dir=f"{tmp}/attachments")
        runner = web.AppRunner(await create_app(settings))
        await runner.setup()
        loaded = sorted({name.split(".")[0] for name in sys.modules} & {"mcp", "redis", "a2a"})
        await runner.cleanup()
    print(json.dumps(loaded))

asyncio.run(main(sys.argv[1]))
"""


@pytest.mark.parametrize(("mcp_url", "expected"), [("", []), ("http://127.0.0.1:9/mcp", ["mcp"])])
def test_start_up_loads_the_mcp_and_redis_clients_only_when_configured(mcp_url: str, expected: list[str]) -> None:
    """Start-up time is mostly imports: a service without MCP servers or Redis never loads their
    clients (the mcp package alone took ~0.6 s of a 1.4 s start), and the A2A SDK and the MCP
    server behind /a2a and /mcp load with their first request (a2a-sdk took ~0.45 s)."""
    import json
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", _LOADED_AT_START, mcp_url], capture_output=True, text=True,
                         timeout=120, check=True, cwd=PACKAGE_ROOT.parent).stdout
    assert json.loads(out.strip().splitlines()[-1]) == expected
