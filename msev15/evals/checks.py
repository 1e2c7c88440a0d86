"""What a turn's answer must show (a scenario turn's ``expect``), and pass^k.

Each expectation that does not hold gives one :class:`Miss`: which expectation, and what came
instead. Text checks are case-insensitive; a tool call's ``arguments`` match as a subset (every
key given must be there with an equal value; strings compared case-insensitively).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from math import comb
from typing import Any

from msev15.evals.client import TurnResult


@dataclass(frozen=True)
class Miss:
    expectation: str
    got: str


def _subset(expected: Any, actual: Any) -> bool:
    if isinstance(expected, dict):
        return isinstance(actual, dict) and all(k in actual and _subset(v, actual[k]) for k, v in expected.items())
    if isinstance(expected, list):
        return isinstance(actual, list) and len(expected) == len(actual) and all(
            _subset(e, a) for e, a in zip(expected, actual, strict=True))
    if isinstance(expected, str) and isinstance(actual, str):
        return expected.casefold() == actual.casefold()
    return bool(expected == actual)


def _calls(result: TurnResult) -> str:
    if not result.tool_calls:
        return "no tool calls"
    return "; ".join(f"{name} {json.dumps(args, sort_keys=True, default=str)}" for name, args in result.tool_calls)


def _short(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return repr(text if len(text) <= limit else text[:limit - 3] + "...")


def check(expect: dict[str, Any], result: TurnResult) -> list[Miss]:
    misses: list[Miss] = []
    reply = result.reply.casefold()
    for wanted in expect.get("tool_calls") or []:
        name, arguments = wanted["name"], wanted.get("arguments") or {}
        if not any(n == name and _subset(arguments, a) for n, a in result.tool_calls):
            shown = f"{name} {json.dumps(arguments, sort_keys=True)}" if arguments else name
            misses.append(Miss(f"tool_calls: {shown}", _calls(result)))
    for name in expect.get("no_tool_calls") or []:
        if any(n == name for n, _ in result.tool_calls):
            misses.append(Miss(f"no_tool_calls: {name}", _calls(result)))
    for text in expect.get("reply_contains") or []:
        if text.casefold() not in reply:
            misses.append(Miss(f"reply_contains: {text!r}", _short(result.reply)))
    for text in expect.get("reply_not_contains") or []:
        if text.casefold() in reply:
            misses.append(Miss(f"reply_not_contains: {text!r}", _short(result.reply)))
    pattern = expect.get("reply_matches")
    if pattern is not None and re.search(pattern, result.reply, re.IGNORECASE) is None:
        misses.append(Miss(f"reply_matches: {pattern!r}", _short(result.reply)))
    status = expect.get("status", "completed")
    if result.status != status:
        got = result.status + (f" ({result.error})" if result.error else "")
        misses.append(Miss(f"status: {status}", got))
    pending = expect.get("pending")
    if pending is not None and sorted(pending) != sorted(result.pending):
        misses.append(Miss(f"pending: {sorted(pending)}", str(sorted(result.pending))))
    return misses


def pass_hat_k(trials: int, passed: int) -> dict[str, float]:
    """τ-bench's unbiased estimator of pass^k, for k = 1..trials: C(c, k) / C(n, k), the chance
    that k trials drawn from the n run all pass."""
    return {str(k): comb(passed, k) / comb(trials, k) for k in range(1, trials + 1)}
