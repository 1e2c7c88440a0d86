"""Settings validation, the CLI's exit codes, and the service as a real process (SIGTERM)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from msev15.common.env import SettingsError
from msev15.escalation.cli import main
from msev15.escalation.config import EscalationSettings


def test_defaults_match_the_spec():
    settings = EscalationSettings.from_env({})
    assert (settings.host, settings.port, settings.profile) == ("127.0.0.1", 8078, "dev")  # loopback unless exposed
    assert settings.sender_email == "noreply@example.com"
    assert settings.support_team_email == "support@example.com"
    assert (settings.email_retry_count, settings.email_timeout_seconds) == (3, 30.0)
    assert settings.email_retry_base_seconds == 1.0
    assert settings.ticket_base_url == "https://support.example.com/tickets"
    assert settings.admin_ticket_base_url == "https://support.example.com/admin/tickets"
    assert settings.backend == "outbox"


def test_backend_choice_follows_the_configuration():
    assert EscalationSettings.from_env({"SMTP_SERVER": "mail.example.com"}).backend == "smtp"


def test_env_file_is_read_and_the_environment_wins(tmp_path: Path):
    env_file = tmp_path / ".env"
    env_file.write_text("PORT=9001\nSUPPORT_TEAM_EMAIL=team@example.com\nTICKET_BASE_URL=https://t.example/x/\n")
    settings = EscalationSettings.from_env({"PORT": "9002"}, env_file)
    assert settings.port == 9002
    assert settings.support_team_email == "team@example.com"
    assert settings.ticket_base_url == "https://t.example/x"


def test_each_bad_variable_gets_one_line_naming_value_and_expectation():
    with pytest.raises(SettingsError) as info:
        EscalationSettings.from_env({
            "PORT": "eighty", "EMAIL_RETRY_COUNT": "0", "SENDER_EMAIL": "nobody", "PROFILE": "staging",
            "TICKET_BASE_URL": "ftp://x", "EMAIL_TIMEOUT_SECONDS": "-1", "LOG_LEVEL": "loud",
        })
    assert sorted(info.value.problems) == sorted([
        "PORT must be an integer between 0 and 65535, got 'eighty'",
        "EMAIL_RETRY_COUNT must be an integer between 1 and 10, got '0'",
        "SENDER_EMAIL must be an email address such as support@example.com, got 'nobody'",
        "PROFILE must be one of dev, prod, got 'staging'",
        "TICKET_BASE_URL must be an http(s) URL without query, such as https://support.example.com/tickets, "
        "got 'ftp://x'",
        "EMAIL_TIMEOUT_SECONDS must be a number between 0.1 and 600, got '-1'",
        "LOG_LEVEL must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL, got 'loud'",
    ])


def test_prod_profile_refuses_the_file_outbox_and_plain_http_acs():
    with pytest.raises(SettingsError, match="PROFILE=prod needs AZURE_COMMUNICATION_CONNECTION_STRING or SMTP_SERVER"):
        EscalationSettings.from_env({"PROFILE": "prod"})
    with pytest.raises(SettingsError, match="must use an https endpoint when PROFILE=prod"):
        EscalationSettings.from_env({"PROFILE": "prod", "AZURE_COMMUNICATION_CONNECTION_STRING":
                                     "endpoint=http://127.0.0.1:9/;accesskey=a2V5"})
    assert EscalationSettings.from_env({"PROFILE": "prod", "SMTP_SERVER": "mail.example.com"}).profile == "prod"


def test_secrets_are_masked():
    settings = EscalationSettings.from_env({"SENDER_PASSWORD": "hunter22"})
    assert settings.masked()["SENDER_PASSWORD"] == "********"
    assert "hunter22" in settings.secrets()


def test_cli_exits_2_with_one_line_per_bad_variable(capsys):
    code = main([], environ={"EMAIL_RETRY_COUNT": "many", "SUPPORT_TEAM_EMAIL": "x@"})
    err = capsys.readouterr().err
    assert code == 2
    assert "EMAIL_RETRY_COUNT must be an integer between 1 and 10, got 'many'" in err
    assert "SUPPORT_TEAM_EMAIL must be an email address such as support@example.com, got 'x@'" in err


def test_cli_flags_are_validated_like_the_environment(capsys):
    assert main(["--port", "99999"], environ={}) == 2
    assert "PORT must be an integer between 0 and 65535, got '99999'" in capsys.readouterr().err


def test_cli_reports_a_missing_env_file(capsys, tmp_path: Path):
    assert main(["--env-file", str(tmp_path / "nope.env")], environ={}) == 2
    assert "does not exist" in capsys.readouterr().err


def test_cli_invalid_acs_connection_string(capsys):
    assert main([], environ={"AZURE_COMMUNICATION_CONNECTION_STRING": "endpoint=https://x/"}) == 2
    assert "Invalid Azure Communication Services connection string" in capsys.readouterr().err


@pytest.mark.subprocess
async def test_service_process_serves_and_stops_cleanly_on_sigterm(tmp_path: Path):
    # No --host, HOST or token: the default binds loopback, so it starts without a token.
    env = {k: v for k, v in os.environ.items()
           if k not in ("SMTP_SERVER", "AZURE_COMMUNICATION_CONNECTION_STRING", "HOST", "MCP_AUTH_TOKEN")}
    env.update(ESCALATION_DB_PATH=str(tmp_path / "esc.db"), EMAIL_OUTBOX_DIR=str(tmp_path / "outbox"),
               LOG_LEVEL="INFO", PYTHONUNBUFFERED="1")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "msev15.escalation", "--port", "0",
        cwd=tmp_path, env=env, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE)
    assert proc.stderr is not None
    lines: list[str] = []
    try:
        async with asyncio.timeout(20):
            while "listening on" not in (lines[-1] if lines else ""):
                line = (await proc.stderr.readline()).decode()
                assert line, "the service exited before listening:\n" + "".join(lines)
                lines.append(line)
        url = lines[-1].rsplit(" ", 1)[1].strip()
        assert url.startswith("http://127.0.0.1:") and url.endswith("/mcp")
        # The one log format of the three programs; the server binds no session, tenant or request.
        assert any("| INFO | escalation.service | session=- | tenant=- | req=- | Email backend: outbox" in line
                   for line in lines)
        async with aiohttp.ClientSession() as session, session.get(url.removesuffix("/mcp") + "/health") as resp:
            assert resp.status == 200
            assert json.loads(await resp.text())["backend"] == "outbox"

        proc.send_signal(signal.SIGTERM)
        started = time.monotonic()
        async with asyncio.timeout(15):
            rest = (await proc.stderr.read()).decode()
            code = await proc.wait()
        assert code == 0
        assert time.monotonic() - started < 10
        assert "EscalationComms stopped" in rest
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def test_empty_addresses_mean_the_defaults() -> None:
    """One .env may serve both programs; the main service's SENDER_EMAIL= (empty) is fine here."""
    from msev15.escalation.config import EscalationSettings

    settings = EscalationSettings.from_env({"SENDER_EMAIL": "", "SUPPORT_TEAM_EMAIL": "  "})
    assert settings.sender_email == "noreply@example.com"
    assert settings.support_team_email == "support@example.com"


def test_the_example_env_file_starts_the_escalation_settings_too() -> None:
    from pathlib import Path

    from msev15.escalation.config import EscalationSettings

    example = Path(__file__).resolve().parents[2] / ".env.example"
    settings = EscalationSettings.from_env({}, example)
    assert settings.sender_email == "noreply@example.com"
