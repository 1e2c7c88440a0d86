"""Azure through the real ``openai`` client: its URL shapes, API keys and keyless Microsoft Entra ID.

Keyless runs through the real ``DefaultAzureCredential``: the scripted server doubles as an App
Service managed-identity endpoint (``IDENTITY_ENDPOINT``/``IDENTITY_HEADER``), so the credential
chain, the token provider and the bearer header are all the real ones.
"""

from __future__ import annotations

import pytest

from msev15.banner import banner
from msev15.config import Settings
from tests.conftest import assert_envelope, sse_events
from tests.llm_server import TOKEN_PREFIX, Reply, ScriptedLLM

# Anything on this machine that could make DefaultAzureCredential pick another credential.
_AZURE_ENV = ("AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_CLIENT_SECRET", "AZURE_CLIENT_CERTIFICATE_PATH",
              "AZURE_USERNAME", "AZURE_PASSWORD", "AZURE_FEDERATED_TOKEN_FILE", "AZURE_AUTHORITY_HOST",
              "AZURE_TOKEN_CREDENTIALS", "IDENTITY_ENDPOINT", "IDENTITY_HEADER", "MSI_ENDPOINT", "MSI_SECRET",
              "IDENTITY_SERVER_THUMBPRINT", "IMDS_ENDPOINT")


@pytest.fixture
def identity(monkeypatch: pytest.MonkeyPatch, llm: ScriptedLLM) -> ScriptedLLM:
    """A managed identity served by the scripted server (App Service's protocol)."""
    for name in _AZURE_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("IDENTITY_ENDPOINT", f"{llm.url}/msi/token")
    monkeypatch.setenv("IDENTITY_HEADER", "scripted-identity-header")
    return llm


def _azure(llm: ScriptedLLM, **extra):
    return dict(llm_provider="auto", azure_openai_endpoint=llm.url, azure_openai_responses_deployment_name="gpt-4o-dep",
                llm_max_retries=0, **extra)


async def _chat(client, message: str = "hello") -> str:
    resp = await client.post("/api/v1/chat", json={"session_id": "s", "message": message})
    assert resp.status == 200, await resp.text()
    return str((await resp.json())["message"])


async def test_chat_with_a_key_uses_deployments_and_the_dated_api_version(service, llm: ScriptedLLM) -> None:
    client = await service(**_azure(llm, azure_openai_api_key="azure-key-abcdef"))
    assert await _chat(client) == "Hello from the scripted model."
    assert llm.paths == ["/openai/deployments/gpt-4o-dep/chat/completions?api-version=2024-10-21"]
    assert llm.headers[0]["api-key"] == "azure-key-abcdef" and "Authorization" not in llm.headers[0]
    ready = await (await client.get("/health/readiness")).json()
    assert ready["checks"]["azure_openai_auth"] == "api_key"


async def test_responses_on_the_default_api_version_goes_to_the_v1_url(service, llm: ScriptedLLM) -> None:
    """2024-10-21 (our default) predates the Responses API on Azure: the v1 URL needs no version."""
    client = await service(**_azure(llm, azure_openai_api_key="azure-key-abcdef", llm_api="responses"))
    stream = await client.post("/api/v1/chat/stream", json={"session_id": "s", "message": "hello"})
    events = sse_events(await stream.text())
    assert "".join(e["content"] for e in events if e["type"] == "token") == "Hello from the scripted model."
    assert llm.paths == ["/openai/v1/responses"] and llm.rejected == []
    assert llm.requests[0]["model"] == "gpt-4o-dep"
    assert llm.headers[0]["Authorization"] == "Bearer azure-key-abcdef"


async def test_responses_on_a_new_dated_api_version_uses_the_resource_url(service, llm: ScriptedLLM) -> None:
    client = await service(**_azure(llm, azure_openai_api_key="azure-key-abcdef", llm_api="responses",
                                    azure_openai_api_version="2025-04-01-preview"))
    assert await _chat(client) == "Hello from the scripted model."
    assert llm.paths == ["/openai/responses?api-version=2025-04-01-preview"]
    assert llm.headers[0]["api-key"] == "azure-key-abcdef"


async def test_the_scripted_azure_refuses_what_azure_refuses(llm: ScriptedLLM) -> None:
    """The rules the tests above rely on: no Responses at old dated versions, no dated v1."""
    import aiohttp

    body = {"model": "d", "input": "hi", "stream": True}
    async with aiohttp.ClientSession() as http:
        old = await http.post(f"{llm.url}/openai/responses?api-version=2024-10-21", json=body)
        assert old.status == 400 and "2025-03-01-preview" in (await old.json())["error"]["message"]
        dated_v1 = await http.post(f"{llm.url}/openai/v1/responses?api-version=2024-10-21", json=body)
        assert dated_v1.status == 400


@pytest.mark.parametrize("version", ["preview", "latest"])
async def test_the_v1_apis_preview_and_latest_use_the_v1_url_with_that_label(service, llm: ScriptedLLM,
                                                                               version: str) -> None:
    client = await service(**_azure(llm, azure_openai_api_key="azure-key-abcdef", azure_openai_api_version=version))
    assert await _chat(client) == "Hello from the scripted model."
    assert llm.paths == [f"/openai/v1/chat/completions?api-version={version}"]


async def test_chat_on_the_v1_url(service, llm: ScriptedLLM) -> None:
    client = await service(**_azure(llm, azure_openai_api_key="azure-key-abcdef", azure_openai_api_version="v1"))
    assert await _chat(client) == "Hello from the scripted model."
    assert llm.paths == ["/openai/v1/chat/completions"] and llm.requests[0]["model"] == "gpt-4o-dep"


@pytest.mark.parametrize("api, path", [
    ("chat", "/openai/deployments/gpt-4o-dep/chat/completions?api-version=2024-10-21"),
    ("responses", "/openai/v1/responses"),
])
async def test_keyless_signs_in_with_entra_id(service, identity: ScriptedLLM, api: str, path: str) -> None:
    llm = identity
    client = await service(**_azure(llm, llm_api=api))
    assert await _chat(client) == "Hello from the scripted model."
    assert await _chat(client, "again") == "Hello from the scripted model."
    assert llm.paths[0] == path
    assert llm.headers[0]["Authorization"] == f"Bearer {TOKEN_PREFIX}1" and "api-key" not in llm.headers[0]
    assert llm.headers[1]["Authorization"] == f"Bearer {TOKEN_PREFIX}1"  # the token is cached, not fetched per call
    assert [q["resource"] for q in llm.token_requests] == ["https://cognitiveservices.azure.com"]
    ready = await (await client.get("/health/readiness")).json()
    assert ready["checks"]["azure_openai"] == "healthy" and ready["checks"]["azure_openai_auth"] == "entra_id"


async def test_keyless_without_any_credential_says_so(service, llm: ScriptedLLM, monkeypatch) -> None:
    for name in _AZURE_ENV:
        monkeypatch.delenv(name, raising=False)
    # Only the environment credential, which has nothing to go on: no sign-in is possible.
    monkeypatch.setenv("AZURE_TOKEN_CREDENTIALS", "EnvironmentCredential")
    client = await service(**_azure(llm))
    resp = await client.post("/api/v1/chat", json={"session_id": "s", "message": "hello"})
    assert resp.status == 503
    assert_envelope(await resp.json(), "llm_unavailable")
    assert llm.requests == []  # nothing was sent without a token
    ready = await (await client.get("/health/readiness")).json()
    assert ready["checks"]["azure_openai"] == "no_credential"
    assert any("Microsoft Entra ID" in w for w in ready["warnings"])


@pytest.mark.parametrize("api", ["chat", "responses"])
async def test_project_endpoint_uses_its_openai_v1_url(service, identity: ScriptedLLM, api: str) -> None:
    """What azure-ai-projects' get_openai_client() derives: {project}/openai/v1, scope ai.azure.com."""
    llm = identity
    client = await service(llm_provider="auto", azure_ai_project_endpoint=f"{llm.url}/api/projects/proj",
                           azure_openai_responses_deployment_name="gpt-4o-dep", llm_api=api, llm_max_retries=0)
    assert await _chat(client) == "Hello from the scripted model."
    suffix = "responses" if api == "responses" else "chat/completions"
    assert llm.paths == [f"/api/projects/proj/openai/v1/{suffix}"]
    assert llm.headers[0]["Authorization"] == f"Bearer {TOKEN_PREFIX}1"
    assert [q["resource"] for q in llm.token_requests] == ["https://ai.azure.com"]


def test_settings_resolve_keyless_azure_and_say_so() -> None:
    keyless = Settings.defaults(azure_openai_endpoint="https://x.openai.azure.com")
    assert keyless.provider == "azure" and keyless.azure_auth == "entra-id"
    project = "https://x.services.ai.azure.com/api/projects/p"
    assert Settings.defaults(azure_ai_project_endpoint=project).provider == "azure"
    keyed = keyless.replace(azure_openai_api_key="k")
    assert keyed.azure_auth == "api-key"
    text = banner(keyless.replace(llm_api="responses"), local_tools=1, mcp_tools=0, mcp_status={}, warnings=())
    assert "Model API: Responses API, auth: Microsoft Entra ID (DefaultAzureCredential)" in text
    assert "auth: API key" in banner(keyed, local_tools=1, mcp_tools=0, mcp_status={}, warnings=())
    assert "Model API" not in banner(Settings.defaults(), local_tools=1, mcp_tools=0, mcp_status={}, warnings=())
    problems = Settings.defaults(llm_provider="azure").problems()
    assert any("needs AZURE_OPENAI_ENDPOINT (or AZURE_AI_PROJECT_ENDPOINT)" in p for p in problems)


async def test_stream_reply_is_the_same_on_azure(service, llm: ScriptedLLM) -> None:
    client = await service(**_azure(llm, azure_openai_api_key="azure-key-abcdef"))
    llm.push(Reply("Two words"))
    stream = await client.post("/api/v1/chat/stream", json={"session_id": "s", "message": "hello"})
    assert [e["content"] for e in sse_events(await stream.text()) if e["type"] == "token"] == ["Two ", "words"]
