"""An instant (or evenly paced) model for benchmarks: a fixed K-token answer, no network."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from msev15.agent.providers.base import ModelReply

_WORDS = ("Your", "order", "ORD-1A2B3C4D", "was", "shipped", "yesterday", "and", "should", "arrive",
          "within", "two", "business", "days;", "the", "tracking", "link", "is", "in", "your", "email.")


def answer_tokens(count: int) -> tuple[str, ...]:
    """``count`` stream tokens (a word and its space) that join into a plausible answer."""
    if count < 1:
        raise ValueError(f"an answer needs at least one token, got {count}")
    return tuple(_WORDS[i % len(_WORDS)] + " " for i in range(count))


class BenchProvider:
    """Streams the same answer to every request: ``tokens`` tokens, ``delay`` seconds before each.

    With ``delay == 0`` it never yields to the event loop between tokens, so the measured cost is
    the service's own path, not the model's. Any positive delay models a slow network model.
    """

    name = "bench"

    def __init__(self, tokens: int = 20, delay: float = 0.0) -> None:
        if delay < 0:
            raise ValueError(f"delay must be >= 0 seconds, got {delay}")
        self._tokens = answer_tokens(tokens)
        self._text = "".join(self._tokens)
        self._delay = delay
        self.model = f"bench-{tokens}-tokens"

    @property
    def text(self) -> str:
        return self._text

    async def stream(self, messages: list[dict[str, Any]],
                     tools: list[dict[str, Any]]) -> AsyncIterator[str | ModelReply]:
        for token in self._tokens:
            if self._delay:
                await asyncio.sleep(self._delay)
            yield token
        yield ModelReply(self._text, (), {"prompt_tokens": len(messages), "completion_tokens": len(self._tokens)})

    async def probe(self) -> str:
        return "healthy"

    async def close(self) -> None:
        return None
