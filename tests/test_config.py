"""Settings: defaults, env file precedence, one clear line per bad variable, masking."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from msev15.cli import main
from msev15.common.env import MASK, SettingsError, read_env_file
from msev15.config import VARIABLES, Settings, load_settings
from msev15.logs.service import setup_logging
from msev15.logs.writer import close_logging


def test_defaults_match_the_spec() -> None:
    s = Settings.from_env({})
    assert (s.server_host, s.server_port, s.log_level) == ("0.0.0.0", 9080, "INFO")
    assert s.enable_cors is True and s.cors_origins == ("*",)
    assert s.enable_rate_limiting is False and s.rate_limit_per_minute == 100
    assert s.mcp_server_url == "http://localhost:8000/mcp" and s.mcp_server_required is False
    assert s.order_db_path == "./data/orders.db"
    assert (s.smtp_port, s.sender_name) == (587, "Customer Service")
    assert (s.log_to_file, s.log_file_path, s.log_max_size_mb, s.log_backup_count) == (True, "./logs/app.log", 100, 5)
    assert s.shutdown_timeout_seconds == 30 and s.trusted_proxies == ()
    assert s.provider == "offline" and s.smtp_configured is False


def test_settings_are_frozen() -> None:
    s = Settings.from_env({})
    with pytest.raises(AttributeError):
        s.server_port = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("SERVER_PORT", "abc", "SERVER_PORT must be an integer between 1 and 65535, got 'abc'"),
        ("SERVER_PORT", "70000", "SERVER_PORT must be an integer between 1 and 65535, got '70000'"),
        ("RATE_LIMIT_PER_MINUTE", "0", "RATE_LIMIT_PER_MINUTE must be an integer between 1 and 1000000, got '0'"),
        ("LOG_LEVEL", "LOUD", "LOG_LEVEL must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL, got 'LOUD'"),
        ("MCP_SERVER_URL", "localhost:8000", "MCP_SERVER_URL must be an http(s) URL"),
        ("ENABLE_CORS", "maybe", "ENABLE_CORS must be true or false, got 'maybe'"),
        ("CORS_ORIGINS", "ftp://x", "CORS_ORIGINS must be '*' or origins like"),
        ("TRUSTED_PROXIES", "10.0.0.0/33", "TRUSTED_PROXIES must be comma-separated IP addresses"),
        ("SENDER_EMAIL", "not-an-email", "SENDER_EMAIL must be an email address"),
        ("SHUTDOWN_TIMEOUT_SECONDS", "nan", "SHUTDOWN_TIMEOUT_SECONDS must be a number between"),
        ("LLM_PROVIDER", "gemini", "LLM_PROVIDER must be one of auto, azure, openai, offline"),
        # Each URL's message gives an example of its own kind, not the MCP server's.
        ("OPENAI_BASE_URL", "api.openai.com/v1",
         "OPENAI_BASE_URL must be an http(s) URL such as https://api.openai.com/v1 or http://localhost:11434/v1"),
        ("AZURE_OPENAI_ENDPOINT", "myresource.openai.azure.com",
         "AZURE_OPENAI_ENDPOINT must be an http(s) URL such as https://<resource>.openai.azure.com"),
        ("AZURE_OPENAI_API_VERSION", "yesterday", "AZURE_OPENAI_API_VERSION must be a dated Azure OpenAI API "
                                                  "version such as 2024-10-21"),
        ("AZURE_OPENAI_API_VERSION", "2024-13-01", "AZURE_OPENAI_API_VERSION must be a dated"),
        ("AZURE_OPENAI_API_VERSION", "2024-10-21-beta", "AZURE_OPENAI_API_VERSION must be a dated"),
    ],
)
def test_bad_values_are_reported_by_name(name: str, value: str, expected: str) -> None:
    with pytest.raises(SettingsError) as info:
        Settings.from_env({name: value})
    assert len(info.value.problems) == 1
    assert info.value.problems[0].startswith(expected)


def test_every_problem_is_reported_at_once_and_secrets_stay_hidden() -> None:
    with pytest.raises(SettingsError) as info:
        Settings.from_env({"SERVER_PORT": "x", "LOG_LEVEL": "LOUD", "SMTP_PORT": "-1"})
    assert [p.split()[0] for p in info.value.problems] == ["SERVER_PORT", "LOG_LEVEL", "SMTP_PORT"]


@pytest.mark.parametrize("version", ["2024-10-21", "2025-04-01-preview", "v1", "preview", "latest"])
def test_azure_api_versions_that_exist_are_accepted(version: str) -> None:
    assert Settings.from_env({"AZURE_OPENAI_API_VERSION": version}).azure_openai_api_version == version


def test_a_bad_value_and_a_missing_one_are_reported_in_the_same_run() -> None:
    """LLM_PROVIDER=azure SERVER_PORT=abc used to report the port only; the missing endpoint
    came on the next run."""
    with pytest.raises(SettingsError) as info:
        load_settings(environ={"LLM_PROVIDER": "azure", "SERVER_PORT": "abc"})
    assert info.value.problems[0].startswith("SERVER_PORT must be an integer")
    assert any(p.startswith("LLM_PROVIDER=azure needs AZURE_OPENAI_ENDPOINT") for p in info.value.problems[1:])
    with pytest.raises(SettingsError) as info:
        Settings.from_env({"SESSION_STORE": "redis", "LOG_LEVEL": "LOUD", "LLM_PROVIDER": "openai"})
    assert [p.split()[0] for p in info.value.problems] == ["LOG_LEVEL", "REDIS_URL", "LLM_PROVIDER=openai"]


def test_env_file_then_environment_wins(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_text('# comment\nexport SERVER_PORT=9191\nLOG_LEVEL="debug"\nSENDER_NAME=Support Team # trailing\n\n')
    s = Settings.from_env({"SERVER_PORT": "9292"}, env)
    assert s.server_port == 9292 and s.log_level == "DEBUG" and s.sender_name == "Support Team"
    assert read_env_file(env)["SERVER_PORT"] == "9191"


def test_bad_env_files(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="does not exist"):
        read_env_file(tmp_path / "missing.env")
    broken = tmp_path / "broken.env"
    broken.write_text("GOOD=1\nthis line is junk\n")
    with pytest.raises(SettingsError, match="line 2: expected KEY=VALUE"):
        read_env_file(broken)


def test_cross_field_problems(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="LLM_PROVIDER=azure needs"):
        load_settings(environ={"LLM_PROVIDER": "azure"})
    with pytest.raises(SettingsError, match="SYSTEM_PROMPT_FILE must be a readable, non-empty UTF-8 text file"):
        load_settings(environ={"SYSTEM_PROMPT_FILE": str(tmp_path / "nope.txt")})


def test_provider_resolution() -> None:
    assert Settings.from_env({"AZURE_OPENAI_ENDPOINT": "https://x.openai.azure.com",
                              "AZURE_OPENAI_API_KEY": "k"}).provider == "azure"
    assert Settings.from_env({"OPENAI_BASE_URL": "http://127.0.0.1:11434/v1"}).provider == "openai"
    assert Settings.from_env({"LLM_PROVIDER": "offline", "OPENAI_BASE_URL": "http://h/v1"}).provider == "offline"


def test_masked_hides_secrets() -> None:
    s = Settings.from_env({"AZURE_OPENAI_API_KEY": "super-secret-key", "SENDER_PASSWORD": "hunter22"})
    masked = s.masked()
    assert masked["AZURE_OPENAI_API_KEY"] == MASK and masked["SENDER_PASSWORD"] == MASK
    assert masked["OPENAI_API_KEY"] == ""  # unset secrets show as unset
    assert "super-secret-key" not in repr(masked)
    assert set(s.secrets()) == {"super-secret-key", "hunter22"}
    assert {v.name for v in VARIABLES} == set(masked)


def test_config_says_what_llm_provider_auto_resolved_to(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("LLM_PROVIDER", "OPENAI_BASE_URL", "AZURE_OPENAI_ENDPOINT", "AZURE_AI_PROJECT_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    assert main(["config"]) == 0
    assert "LLM_PROVIDER=auto  # resolves to offline\n" in capsys.readouterr().out
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:11434/v1")
    assert main(["config"]) == 0
    out = capsys.readouterr().out
    assert "LLM_PROVIDER=auto  # resolves to openai\n" in out
    # The line is still a valid .env line: the comment is dropped when it is read back.
    (tmp_path / "again.env").write_text(out)
    assert read_env_file(tmp_path / "again.env")["LLM_PROVIDER"] == "auto"


def test_serve_help_describes_the_command(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    assert "Run the REST + SSE service" in capsys.readouterr().out


def test_config_command_masks_and_serve_exits_2_on_bad_config(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    env = tmp_path / "prod.env"
    env.write_text("AZURE_OPENAI_API_KEY=abcdef123456\n")
    assert main(["config", "--env-file", str(env)]) == 0
    out = capsys.readouterr().out
    assert f"AZURE_OPENAI_API_KEY={MASK}" in out and "abcdef123456" not in out
    monkeypatch.setenv("SERVER_PORT", "abc")
    monkeypatch.setenv("LOG_LEVEL", "LOUD")
    assert main(["serve"]) == 2
    err = capsys.readouterr().err
    assert "SERVER_PORT must be an integer between 1 and 65535, got 'abc'" in err
    assert "LOG_LEVEL must be one of" in err


def test_no_secret_reaches_the_log_file(tmp_path: Path) -> None:
    secrets = {"AZURE_OPENAI_API_KEY": "azure-key-0123456789", "SENDER_PASSWORD": "smtp-pass-987",
               "OPENAI_API_KEY": "sk-live-abcdef"}
    s = Settings.from_env({**secrets, "LOG_TO_FILE": "true", "LOG_FILE_PATH": str(tmp_path / "deep" / "app.log"),
                           "LOG_LEVEL": "DEBUG"})
    setup_logging(s)
    log = logging.getLogger("test.secrets")
    try:
        log.info("settings: %s", s)  # the raw dataclass, secrets and all
        log.debug("key=%s password=%s", secrets["AZURE_OPENAI_API_KEY"], secrets["SENDER_PASSWORD"])
        try:
            raise RuntimeError(f"connect failed with {secrets['OPENAI_API_KEY']}")
        except RuntimeError:
            log.exception("boom")
    finally:
        close_logging()
    text = (tmp_path / "deep" / "app.log").read_text()
    assert text.count(MASK) >= 4
    for secret in secrets.values():
        assert secret not in text
    assert "| INFO | test.secrets | session=- | tenant=- | req=- | settings:" in text


async def test_malformed_requests_log_one_warning_line(aiohttp_client, tmp_path: Path) -> None:
    import asyncio

    from msev15.app import create_app
    from tests.conftest import make_settings

    settings = make_settings(tmp_path, log_to_file=True)
    setup_logging(settings)
    try:
        client = await aiohttp_client(await create_app(settings))
        reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
        writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n")
        await writer.drain()
        status = await asyncio.wait_for(reader.readline(), 5)
        writer.close()
        await writer.wait_closed()
        assert status.split()[1] == b"400"
        assert (await client.get("/health")).status == 200
    finally:
        close_logging()
    text = (tmp_path / "logs" / "app.log").read_text()
    line = next(line for line in text.splitlines() if "malformed request" in line)
    assert "| WARNING | aiohttp.server |" in line and "LineTooLong" in line
    assert "Traceback" not in text


@pytest.mark.parametrize("content", [b"", b"   \n", b"\xff\xfe not utf-8"])
def test_unusable_system_prompt_files_are_refused(tmp_path: Path, content: bytes) -> None:
    prompt = tmp_path / "prompt.txt"
    prompt.write_bytes(content)
    with pytest.raises(SettingsError, match="SYSTEM_PROMPT_FILE must be a readable, non-empty UTF-8 text file"):
        load_settings(environ={"SYSTEM_PROMPT_FILE": str(prompt)})
    prompt.write_text("You are a helpful agent.")
    assert load_settings(environ={"SYSTEM_PROMPT_FILE": str(prompt)}).system_prompt_file == str(prompt)


def test_config_into_a_pipe_closed_early_exits_quietly(tmp_path: Path) -> None:
    """`msev15 config | head -1`: the reader stops early; no BrokenPipeError traceback."""
    import subprocess
    import sys

    command = f"{sys.executable} -m msev15 config | head -1"
    done = subprocess.run(command, shell=True, capture_output=True, text=True, timeout=60, cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)})
    assert done.stdout.count("\n") == 1 and "=" in done.stdout
    assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr, done.stderr


@pytest.mark.parametrize("argv", [["config"], ["keys", "list"], ["profile", "show", "--tenant", "acme"]])
def test_every_command_reports_a_bad_configuration_and_exits_2(argv: list[str], tmp_path: Path, capsys,
                                                               monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("API_KEYS_DB_PATH", str(tmp_path / "keys.db"))
    monkeypatch.setenv("SERVER_PORT", "abc")
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("Configuration error:\n")
    assert "  SERVER_PORT must be an integer between 1 and 65535, got 'abc'" in err
    assert not (tmp_path / "keys.db").exists()  # nothing was opened
