"""LLM providers: Azure OpenAI, OpenAI-compatible endpoints, and the built-in offline assistant."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from msev15.agent.providers.base import LLMError, ModelReply, Provider, ToolCallRequest
from msev15.config import Settings

__all__ = ["LLMError", "ModelReply", "Provider", "ToolCallRequest", "make_provider"]


def make_provider(settings: Settings, capabilities: Callable[[], Mapping[str, str]] | None = None) -> Provider:
    """The configured provider; ``capabilities`` (tool name -> capability tag, read each turn) is
    how the offline assistant finds its tools."""
    if settings.provider == "offline":
        from msev15.agent.providers.offline import OfflineProvider

        return OfflineProvider(capabilities) if capabilities else OfflineProvider()
    from msev15.agent.providers.openai_compat import OpenAIProvider

    return OpenAIProvider.from_settings(settings)
