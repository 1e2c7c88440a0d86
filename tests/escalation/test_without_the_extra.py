"""Without the ``escalation`` extra the CLI says what to install, in one line, instead of a
traceback. The missing package is simulated in a fresh interpreter (``sys.modules[name] = None``
makes its import fail as if it were not installed)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.escalation.conftest import ACS_KEY

HINT = "install the 'escalation' extra: pip install 'msev15e2e[escalation]'"


def _escalation_mcp_without(module: str, tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    code = (f"import sys; sys.modules[{module!r}] = None\n"
            "from msev15.cli import main\n"
            "raise SystemExit(main(['escalation-mcp', '--host', '127.0.0.1', '--port', '0']))\n")
    environ = {k: v for k, v in os.environ.items() if k not in ("SMTP_SERVER", "AZURE_COMMUNICATION_CONNECTION_STRING")}
    environ.update(ESCALATION_DB_PATH=str(tmp_path / "esc.db"), EMAIL_OUTBOX_DIR=str(tmp_path / "outbox"), **env)
    return subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=environ, capture_output=True, text=True,
                          timeout=60, stdin=subprocess.DEVNULL)


@pytest.mark.subprocess
def test_without_the_azure_sdk_acs_says_what_to_install(tmp_path: Path) -> None:
    acs = f"endpoint=http://127.0.0.1:9/;accesskey={ACS_KEY}"
    run = _escalation_mcp_without("azure.communication.email.aio", tmp_path, AZURE_COMMUNICATION_CONNECTION_STRING=acs)
    assert run.returncode == 1, run.stderr
    assert "escalation-mcp: cannot start: Azure Communication Services delivery needs azure-communication-email" \
        in run.stderr
    assert HINT in run.stderr and "Traceback" not in run.stderr
