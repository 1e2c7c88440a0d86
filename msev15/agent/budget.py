"""The model's context budget (LLM_CONTEXT_MAX_CHARS): the newest whole turns that fit.

Applied to whatever the session store returns, so every store implementation gets it. A turn
starts at a user message and runs to the next one; a turn is sent whole or not at all, so the
model never sees a tool result without its call or an answer without its question.
"""

from __future__ import annotations

from typing import Any


def message_chars(message: dict[str, Any]) -> int:
    size = len(message.get("content") or "")
    for call in message.get("tool_calls") or ():
        function = call.get("function") or {}
        size += len(function.get("arguments") or "") + len(function.get("name") or "")
    return size


def fit_context(history: list[dict[str, Any]], max_chars: int) -> list[dict[str, Any]]:
    """The newest whole turns of ``history`` whose characters add up to at most ``max_chars``."""
    used, start, turn = 0, len(history), 0
    for i in range(len(history) - 1, -1, -1):
        turn += message_chars(history[i])
        if history[i].get("role") == "user" or i == 0:
            if used + turn > max_chars:
                break
            used, start, turn = used + turn, i, 0
    return history[start:]
