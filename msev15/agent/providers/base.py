"""What every LLM provider gives the tool loop: a stream of text tokens, then one reply."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

# What a provider's probe() reports for readiness.
# "rejected": the endpoint answered 401/403 to the credentials (a wrong or missing key, a role).
ProbeStatus = Literal["healthy", "offline", "unreachable", "no_credential", "rejected"]


@dataclass(frozen=True, slots=True)
class ToolCallRequest:
    id: str
    name: str
    arguments: str  # JSON text, as the model wrote it


@dataclass(frozen=True, slots=True)
class ModelReply:
    """The end of one model round: the full text and the tool calls it asked for."""

    text: str
    tool_calls: tuple[ToolCallRequest, ...] = ()
    usage: dict[str, int] | None = field(default=None)
    model: str | None = None  # the model that answered, as the endpoint named it (traces)
    finish_reason: str | None = None  # as the endpoint gave it: stop, tool_calls, length, ... (traces)


@dataclass(frozen=True, slots=True)
class ModelChoice:
    """A tenant's model settings (its profile's ``model``): None keeps the service's."""

    name: str | None = None  # the model (OpenAI-compatible) or deployment (Azure) on the configured endpoint
    api: str | None = None  # "chat" or "responses"
    temperature: float | None = None
    max_output_tokens: int | None = None


class LLMError(Exception):
    """A model failure the client sees: ``code`` for the envelope, ``status`` for /chat,
    ``retry_after`` (seconds, from the model's own ``retry-after``/``retry-after-ms``) when the
    model asked to be called again later, and ``detail`` (the envelope's: what the model endpoint
    said, and which setting to check)."""

    def __init__(self, code: str, message: str, status: int, retry_after: float | None = None,
                 detail: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status
        self.retry_after = retry_after
        self.detail = detail


class Provider(Protocol):
    name: str
    model: str

    def stream(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> AsyncIterator[str | ModelReply]:
        """Yield text tokens as they arrive, then exactly one ModelReply. Raise LLMError."""
        ...

    async def probe(self) -> ProbeStatus:
        """Readiness: "healthy", "offline" (no endpoint to reach), or "unreachable"."""
        ...

    async def close(self) -> None: ...
