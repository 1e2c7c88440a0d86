"""Model failures a newcomer can act on: the endpoint's own words and the setting to check, in the
envelope, the stream's error event, readiness and the banner, for both URL shapes (OpenAI and
Azure). The scripted server refuses credentials as the real services do (401 with OpenAI's
message, 403 with Azure's); "unreachable" is a closed port.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest

from msev15.agent.context import MAILER
from msev15.banner import banner
from msev15.config import Settings
from msev15.handlers.health_monitor import HEALTH, readiness_warnings
from tests.conftest import assert_envelope, make_settings, sse_events
from tests.llm_server import ScriptedLLM

KEY = "sk-right-key-0123456789"
WRONG = "sk-wrong-key-9876543210"
AZURE_KEY = "azure-right-key-abcdef"


def _openai(url: str, key: str = WRONG) -> dict[str, Any]:
    return dict(llm_provider="openai", openai_base_url=f"{url}/v1", openai_api_key=key, openai_model="gpt-test",
                llm_max_retries=0)


def _azure(url: str, key: str = "azure-wrong-key-123456") -> dict[str, Any]:
    return dict(llm_provider="azure", azure_openai_endpoint=url, azure_openai_api_key=key,
                azure_openai_responses_deployment_name="gpt-4o-dep", llm_max_retries=0)


SHAPES = {"openai": (_openai, "OPENAI_API_KEY", "OPENAI_BASE_URL"),
          "azure": (_azure, "AZURE_OPENAI_API_KEY", "AZURE_OPENAI_ENDPOINT")}


@pytest.fixture
async def guarded() -> AsyncIterator[ScriptedLLM]:
    async with ScriptedLLM(api_key=KEY) as server:
        yield server


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _chat(client: Any) -> tuple[int, dict[str, Any]]:
    resp = await client.post("/api/v1/chat", json={"session_id": "s", "message": "hello"})
    return resp.status, await resp.json()


async def _ready(client: Any) -> dict[str, Any]:
    await client.app[HEALTH].first_status(10)
    return await (await client.get("/health/readiness")).json()


@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("status", [401, 403])
async def test_refused_credentials_say_what_the_endpoint_said_and_which_key(service, guarded: ScriptedLLM,
                                                                              shape: str, status: int) -> None:
    settings, key_var, _ = SHAPES[shape]
    guarded.deny_status = status
    client = await service(**settings(guarded.url))

    code, body = await _chat(client)
    assert code == 502
    assert_envelope(body, "llm_error")
    assert f"HTTP {status}" in body["message"]
    said = "Incorrect API key provided" if status == 401 else "The principal lacks the required data action"
    assert f"The endpoint said: {said}" in body["detail"]
    assert f"Check {key_var}" in body["detail"]
    assert WRONG not in body["detail"] and "azure-wrong-key-123456" not in body["detail"]

    stream = await client.post("/api/v1/chat/stream", json={"session_id": "s", "message": "hello"})
    error = sse_events(await stream.text())[-1]
    assert error["type"] == "error" and error["detail"] == body["detail"]

    ready = await _ready(client)
    assert ready["checks"]["model"] == {"status": "rejected", "provider": shape, "endpoint": client.app[
        HEALTH].endpoint}
    assert ready["checks"]["azure_openai"] == "rejected"
    assert any("refused the service's credentials" in w and key_var in w for w in ready["warnings"])


@pytest.mark.parametrize("shape", list(SHAPES))
async def test_the_right_key_is_healthy(service, guarded: ScriptedLLM, shape: str) -> None:
    settings, _, _ = SHAPES[shape]
    client = await service(**settings(guarded.url, KEY if shape == "openai" else AZURE_KEY))
    if shape == "azure":
        guarded.api_key = AZURE_KEY
    code, body = await _chat(client)
    assert code == 200 and body["message"] == "Hello from the scripted model."
    ready = await _ready(client)
    assert ready["checks"]["model"]["status"] == "healthy"
    assert ready["checks"]["model"]["provider"] == shape and ready["checks"]["model"]["endpoint"].startswith(
        guarded.url)
    assert not any("language model" in w.lower() for w in ready["warnings"])


@pytest.mark.parametrize("shape", list(SHAPES))
async def test_unreachable_names_the_host_and_the_variable(service, shape: str) -> None:
    settings, _, url_var = SHAPES[shape]
    port = _closed_port()
    client = await service(**settings(f"http://127.0.0.1:{port}"))
    code, body = await _chat(client)
    assert code == 503
    assert_envelope(body, "llm_unavailable")
    assert f"127.0.0.1:{port}" in body["message"]
    assert url_var in body["detail"] and f"127.0.0.1:{port}" in body["detail"]
    ready = await _ready(client)
    assert ready["checks"]["model"]["status"] == "unreachable" and ready["checks"]["azure_openai"] == "unreachable"
    assert any(f"127.0.0.1:{port}" in w and url_var in w for w in ready["warnings"])


async def test_a_missing_key_is_named_as_missing(service, guarded: ScriptedLLM) -> None:
    client = await service(**_openai(guarded.url, key=""))
    code, body = await _chat(client)
    assert code == 502
    assert "No OPENAI_API_KEY is set" in body["detail"]
    assert (await _ready(client))["checks"]["model"]["status"] == "rejected"


async def test_the_banner_shows_the_endpoint_and_warns_when_the_first_probe_fails(service, guarded: ScriptedLLM,
                                                                                  tmp_path) -> None:
    settings = make_settings(tmp_path, **_openai(guarded.url))
    client = await service(settings)
    monitor = client.app[HEALTH]
    assert await monitor.first_status(10) == "rejected"
    warnings = readiness_warnings(settings, model_status=monitor.last_model_status, mailer=client.app[MAILER],
                                  mcp={}, at_start=True, model_endpoint=monitor.endpoint)
    text = banner(settings, local_tools=11, mcp_tools=0, mcp_status={}, warnings=warnings,
                  model_endpoint=monitor.endpoint)
    assert f"Model endpoint: {guarded.url}/v1" in text
    assert "refused the service's credentials (HTTP 401/403): check OPENAI_API_KEY" in text


def test_the_offline_assistant_has_no_endpoint_line() -> None:
    settings = Settings.defaults(llm_provider="offline")
    assert "Model endpoint" not in banner(settings, local_tools=1, mcp_tools=0, mcp_status={}, warnings=[])


async def test_keyless_azure_without_a_credential_is_no_credential_even_when_unreachable(
        service, monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's no_credential: the sign-in is the first thing missing, whatever the network."""
    from tests.test_llm_azure import _AZURE_ENV

    for name in _AZURE_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AZURE_TOKEN_CREDENTIALS", "EnvironmentCredential")  # nothing to sign in with
    client = await service(llm_provider="azure", azure_openai_endpoint=f"http://127.0.0.1:{_closed_port()}",
                           azure_openai_responses_deployment_name="gpt-4o-dep", llm_max_retries=0)
    ready = await _ready(client)
    assert ready["checks"]["model"]["status"] == "no_credential"
    assert any("Microsoft Entra ID" in w for w in ready["warnings"])
