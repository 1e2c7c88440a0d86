"""The offline provider: the built-in assistant behind the same interface as a real model.

It hands the conversation and the turn's tools to the dialogue rules (:mod:`msev15.agent.offline`),
then streams the reply word by word and asks for the tool call through the same loop a model's
would go through. The rules find tools by their capability tags, read from ``capabilities``
(the tool registry's, in the service); a tool without a tag is invisible to them.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

from msev15.agent.offline.dialogue import answer
from msev15.agent.providers.base import ModelReply, ProbeStatus, ToolCallRequest

_WORDS = re.compile(r"\S+\s*|\s+")


def _no_tags() -> Mapping[str, str]:
    return {}


class OfflineProvider:
    name = "offline"
    model = "offline assistant"

    def __init__(self, capabilities: Callable[[], Mapping[str, str]] = _no_tags, token_delay: float = 0.0) -> None:
        self._capabilities = capabilities
        self._delay = token_delay
        self._calls = 0

    async def probe(self) -> ProbeStatus:
        return "offline"

    async def close(self) -> None:
        return None

    async def stream(self, messages: list[dict[str, Any]],
                     tools: list[dict[str, Any]]) -> AsyncIterator[str | ModelReply]:
        functions = {t["function"]["name"]: t["function"] for t in tools}
        text, call = answer(messages, functions, self._capabilities())
        calls: tuple[ToolCallRequest, ...] = ()
        if call is not None:
            self._calls += 1
            calls = (ToolCallRequest(f"call_offline_{self._calls}", call[0], json.dumps(call[1])),)
        # An estimate, as a model's would be: about four characters a token.
        prompt_tokens = sum(len(m.get("content") or "") for m in messages) // 4
        tokens = _WORDS.findall(text)
        for token in tokens:
            # Yield to the loop between tokens, as a network model would, so one long answer
            # never holds up other sessions.
            await asyncio.sleep(self._delay)
            yield token
        yield ModelReply(text, calls, {"prompt_tokens": prompt_tokens, "completion_tokens": len(tokens)})
