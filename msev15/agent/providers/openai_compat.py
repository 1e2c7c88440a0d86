"""Azure OpenAI and OpenAI-compatible endpoints through the ``openai`` package (Chat Completions)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any, TypedDict
from urllib.parse import urlsplit

import openai

from msev15.agent.providers.base import LLMError, ModelReply, ProbeStatus, ToolCallRequest
from msev15.config import Settings

log = logging.getLogger("agent.llm")


class _ClientOptions(TypedDict):
    """What both client classes take alike, typed so ``**`` matches their keyword parameters."""

    max_retries: int
    timeout: float


class OpenAIProvider:
    """One client per process; the client retries 408/409/429/5xx itself (LLM_MAX_RETRIES)."""

    def __init__(self, client: openai.AsyncOpenAI, model: str, name: str, probe_url: str) -> None:
        self.client = client
        self.model = model
        self.name = name
        self._probe_url = probe_url

    @classmethod
    def from_settings(cls, settings: Settings) -> OpenAIProvider:
        common: _ClientOptions = {"max_retries": settings.llm_max_retries, "timeout": settings.llm_timeout_seconds}
        if settings.provider == "azure":
            client: openai.AsyncOpenAI = openai.AsyncAzureOpenAI(
                azure_endpoint=settings.azure_openai_endpoint,
                api_key=settings.azure_openai_api_key,
                api_version=settings.azure_openai_api_version,
                **common,
            )
            return cls(client, settings.azure_openai_responses_deployment_name, "azure", settings.azure_openai_endpoint)
        client = openai.AsyncOpenAI(
            base_url=settings.openai_base_url,
            # Local servers (Ollama, vLLM, llama.cpp) accept any key; the client insists on one.
            api_key=settings.openai_api_key or "not-needed",
            **common,
        )
        return cls(client, settings.openai_model, "openai", settings.openai_base_url)

    async def stream(self, messages: list[dict[str, Any]],
                     tools: list[dict[str, Any]]) -> AsyncIterator[str | ModelReply]:
        kwargs: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if tools:
            kwargs["tools"] = tools
        text: list[str] = []
        calls: dict[int, dict[str, str]] = {}
        usage: dict[str, int] | None = None
        try:
            stream = await self.client.chat.completions.create(**kwargs)
            async with stream:
                async for chunk in stream:
                    if chunk.usage is not None:
                        usage = {"prompt_tokens": chunk.usage.prompt_tokens,
                                 "completion_tokens": chunk.usage.completion_tokens}
                    if not chunk.choices:
                        continue
                    delta = chunk.choices[0].delta
                    if delta is None:
                        continue
                    if delta.content:
                        text.append(delta.content)
                        yield delta.content
                    for part in delta.tool_calls or ():
                        slot = calls.setdefault(part.index, {"id": "", "name": "", "arguments": ""})
                        if part.id:
                            slot["id"] = part.id
                        if part.function is not None:
                            if part.function.name:
                                slot["name"] += part.function.name
                            if part.function.arguments:
                                slot["arguments"] += part.function.arguments
        except openai.APITimeoutError as exc:
            raise LLMError("llm_error", "The language model did not answer in time.", 502) from exc
        except openai.APIConnectionError as exc:
            raise LLMError("llm_unavailable", "The language model endpoint is unreachable.", 503) from exc
        except openai.APIStatusError as exc:
            log.warning("model request failed: HTTP %s", exc.status_code)
            raise LLMError("llm_error", f"The language model returned an error (HTTP {exc.status_code}).", 502) from exc
        except openai.OpenAIError as exc:
            raise LLMError("llm_error", "The language model returned an invalid response.", 502) from exc
        tool_calls = tuple(
            ToolCallRequest(c["id"] or f"call_{i}", c["name"], c["arguments"] or "{}")
            for i, c in sorted(calls.items())
        )
        yield ModelReply("".join(text), tool_calls, usage)

    async def probe(self) -> ProbeStatus:
        """Is the endpoint reachable? A TCP connect, not a billed model call."""
        parts = urlsplit(self._probe_url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(parts.hostname, port), 1.0)
        except (OSError, TimeoutError):
            return "unreachable"
        writer.close()
        try:
            await writer.wait_closed()
        except OSError:
            pass
        return "healthy"

    async def close(self) -> None:
        await self.client.close()
