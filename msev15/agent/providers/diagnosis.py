"""What a model failure tells the person running the service: the endpoint's own words and the
setting to check.

The envelope's ``message`` stays short and the same for every provider; its ``detail`` carries
what the endpoint said (its JSON ``error.message``, without any configured key) and a hint that
names the variable behind the failure: the key for a 401/403, the model or deployment for a
404, the endpoint URL when nothing answers there.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

_MAX_SAID = 300


@dataclass(frozen=True, slots=True)
class Setup:
    """Which variables configure the model client in use."""

    provider: str  # "openai" or "azure"
    auth: str  # "api-key", "entra-id" or "none"
    endpoint: str  # the URL requests go to
    endpoint_var: str  # OPENAI_BASE_URL, AZURE_OPENAI_ENDPOINT or AZURE_AI_PROJECT_ENDPOINT

    @property
    def key_var(self) -> str:
        return "AZURE_OPENAI_API_KEY" if self.provider == "azure" else "OPENAI_API_KEY"

    @property
    def model_vars(self) -> str:
        if self.provider == "azure":
            return "AZURE_OPENAI_RESPONSES_DEPLOYMENT_NAME and AZURE_OPENAI_API_VERSION"
        return "OPENAI_MODEL"

    @property
    def host(self) -> str:
        parts = urlsplit(self.endpoint)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        return f"{parts.hostname}:{port}"


def endpoint_said(body: Any, fallback: str, secrets: Iterable[str] = ()) -> str:
    """The endpoint's own error message (OpenAI and Azure shape ``{"error": {"message"}}``)."""
    said: Any = None
    if isinstance(body, dict):
        error = body.get("error", body)
        said = error.get("message") if isinstance(error, dict) else error
    text = " ".join(str(said or fallback).split())
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    return text[:_MAX_SAID] + ("…" if len(text) > _MAX_SAID else "")


def status_hint(setup: Setup, status: int) -> str:
    """The setting to check after an HTTP ``status`` from the endpoint ("" when none fits)."""
    if status in (401, 403):
        if setup.auth == "entra-id":
            return ("Check that the signed-in Microsoft Entra ID identity has a role such as 'Cognitive Services "
                    f"OpenAI User' on the resource at {setup.endpoint_var}, or set {setup.key_var}.")
        if setup.auth == "none":
            return f"No {setup.key_var} is set: set it to a key of the endpoint at {setup.endpoint_var}."
        return f"Check {setup.key_var}: it must be a key of the endpoint at {setup.endpoint_var} ({setup.endpoint})."
    if status == 404:
        return f"Check {setup.model_vars}, and {setup.endpoint_var} ({setup.endpoint})."
    return ""


def unreachable_hint(setup: Setup) -> str:
    return f"Nothing answered at {setup.host}: check {setup.endpoint_var} ({setup.endpoint}) and the network."


def joined(*parts: str) -> str:
    return " ".join(p.rstrip() if p.endswith(".") else p.rstrip() + "." for p in parts if p)
