"""Which URL, which client and which credential: the settings turned into an openai client.

=================================  ==========================================================
Settings                            Client and URL
=================================  ==========================================================
OPENAI_BASE_URL                     ``AsyncOpenAI(base_url)``: ``/chat/completions``, ``/responses``
AZURE_OPENAI_ENDPOINT, dated        ``AsyncAzureOpenAI``: ``/openai/deployments/{d}/chat/completions``
api-version (chat)                  ``?api-version=…``
AZURE_OPENAI_API_VERSION=v1, or     ``AsyncOpenAI(base_url={endpoint}/openai/v1/)``, no api-version;
LLM_API=responses below             the deployment name goes in ``model``
2025-03-01-preview
LLM_API=responses, dated            ``AsyncAzureOpenAI``: ``/openai/responses?api-version=…``
api-version >= 2025-03-01-preview
AZURE_AI_PROJECT_ENDPOINT only      ``AsyncOpenAI(base_url={project}/openai/v1)``, as the
                                    azure-ai-projects SDK's ``get_openai_client()`` derives it
=================================  ==========================================================

Azure without ``AZURE_OPENAI_API_KEY`` signs in with Microsoft Entra ID: ``DefaultAzureCredential``
(environment, workload identity, managed identity, Azure CLI, …) through the openai client's
token provider, scope ``https://cognitiveservices.azure.com/.default`` for a resource endpoint
and ``https://ai.azure.com/.default`` for a project endpoint (the SDK's choice).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import openai

from msev15.agent.providers.chat_api import ChatCompletions
from msev15.agent.providers.responses_api import Responses
from msev15.config import API_VERSION_LABELS, Settings

RESPONSES_MIN_API_VERSION = "2025-03-01"  # Azure refuses /openai/responses at earlier dated versions
COGNITIVE_SCOPE = "https://cognitiveservices.azure.com/.default"
PROJECT_SCOPE = "https://ai.azure.com/.default"
AUTH_LABELS = {"api-key": "API key", "entra-id": "Microsoft Entra ID (DefaultAzureCredential)", "none": "none"}


@dataclass
class ModelClient:
    client: openai.AsyncOpenAI
    wire: ChatCompletions | Responses
    name: str  # "openai" or "azure"
    auth: str  # "api-key", "entra-id" or "none"
    url: str   # the base URL requests go to (probed for readiness)
    credential: Any = None  # the Entra ID credential, closed with the client
    scope: str = ""
    endpoint_var: str = "OPENAI_BASE_URL"  # the variable that set ``url`` (named in diagnostics)
    secrets: tuple[str, ...] = ()  # keys never to repeat in a diagnostic
    # The Chat Completions path for a model or deployment (a tenant's profile may name another one).
    chat_path: Callable[[str], str] = lambda model: "/chat/completions"


def _uses_v1(settings: Settings) -> bool:
    version = settings.azure_openai_api_version
    if version in API_VERSION_LABELS:  # v1, preview, latest: the /openai/v1 API's own versions
        return True
    return settings.llm_api == "responses" and version[:10] < RESPONSES_MIN_API_VERSION


def _entra(scope: str) -> tuple[Any, Any]:
    """A DefaultAzureCredential and a bearer-token provider over it (tokens are cached and
    refreshed by azure-identity, so a request costs no sign-in)."""
    try:
        from azure.identity.aio import DefaultAzureCredential, get_bearer_token_provider
    except ImportError as exc:  # Settings.problems() reports this before start-up
        raise RuntimeError("Keyless Azure needs azure-identity: pip install 'msev15e2e[azure]'") from exc
    credential = DefaultAzureCredential()
    return credential, get_bearer_token_provider(credential, scope)


def build_client(settings: Settings) -> ModelClient:
    # aiohttp under the client (openai's own adapter, the ``aiohttp`` extra): its connection pool
    # costs a fraction of httpcore's per request, and the service runs on aiohttp anyway.
    common: dict[str, Any] = {"max_retries": settings.llm_max_retries, "timeout": settings.llm_timeout_seconds,
                              "http_client": openai.DefaultAioHttpClient()}
    responses = settings.llm_api == "responses"
    if settings.provider != "azure":
        base = settings.openai_base_url
        # Local servers (Ollama, vLLM, llama.cpp) accept any key; the client insists on one.
        client = openai.AsyncOpenAI(base_url=base, api_key=settings.openai_api_key or "not-needed", **common)
        model = settings.openai_model
        wire = Responses(model, "/responses") if responses else ChatCompletions(model, "/chat/completions")
        return ModelClient(client, wire, "openai", "api-key" if settings.openai_api_key else "none", base,
                           secrets=(settings.openai_api_key,))
    deployment = settings.azure_openai_responses_deployment_name
    key = settings.azure_openai_api_key
    project = not settings.azure_openai_endpoint
    scope = PROJECT_SCOPE if project else COGNITIVE_SCOPE
    credential, token_provider = (None, None) if key else _entra(scope)
    auth = "api-key" if key else "entra-id"
    if project or _uses_v1(settings):
        root = settings.azure_ai_project_endpoint if project else settings.azure_openai_endpoint
        base = root.rstrip("/") + "/openai/v1/"
        version = settings.azure_openai_api_version
        # The v1 API takes no api-version, except to ask for its preview or latest features.
        query = {"api-version": version} if version in ("preview", "latest") else None
        client = openai.AsyncOpenAI(base_url=base, api_key=key or token_provider, default_query=query, **common)
        wire = Responses(deployment, "/responses") if responses else ChatCompletions(deployment, "/chat/completions")
        return ModelClient(client, wire, "azure", auth, base, credential, scope,
                           "AZURE_AI_PROJECT_ENDPOINT" if project else "AZURE_OPENAI_ENDPOINT", (key,))
    endpoint = settings.azure_openai_endpoint
    if key:
        client = openai.AsyncAzureOpenAI(azure_endpoint=endpoint, api_key=key,
                                         api_version=settings.azure_openai_api_version, **common)
    else:
        client = openai.AsyncAzureOpenAI(azure_endpoint=endpoint, azure_ad_token_provider=token_provider,
                                         api_version=settings.azure_openai_api_version, **common)
    # The body is sent as bytes, so the client cannot move the model into the URL itself.
    def chat_path(name: str) -> str:
        return f"/deployments/{quote(name, safe='')}/chat/completions"

    wire = Responses(deployment, "/responses") if responses else ChatCompletions(deployment, chat_path(deployment))
    return ModelClient(client, wire, "azure", auth, endpoint, credential, scope, "AZURE_OPENAI_ENDPOINT", (key,),
                       chat_path)
