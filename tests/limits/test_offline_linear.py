"""The offline assistant reads a message in time linear in its length, whatever the message.

Each shape is a hostile message (long runs that made a pattern backtrack or rescan) built at
1k, 4k and 16k characters; the cost per character at 16k must stay within a small factor of the
cost at 1k, all measured in this one run (no absolute times). A quadratic pattern costs 16 times
more per character at 16k than at 1k; a linear one about the same.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from msev15.agent.offline.dialogue import answer
from msev15.agent.providers.offline import OfflineProvider
from msev15.mcpkit.capabilities import ORDER_CREATE

SIZES = (1_000, 4_000, 16_000)
MAX_GROWTH = 4.0  # per-character cost at 16k / at 1k (quadratic: 16)
SHAPES = {
    "address characters without @": ("", "a-"),
    "digits": ("", "1"),
    "many 'order' words": ("", "order "),
    "many 'order' words after a greeting": ("hi ", "order "),
    "test mail ... email email ...": ("test mail connect ", "email "),
    "customer + whitespace": ("customer", " "),
    "customer id + newlines": ("customer id", "\n"),
    "sku + whitespace": ("sku", " "),
    "price words": ("", "price 1 "),
    "ship to + whitespace": ("create order ship to a", " "),
    "subject + spaces before text": ("send email subject x", " "),
    "saying + whitespace": ("send email saying a", " "),
    "resolution + letters": ("complaint CMP-1234 resolve because ", "a"),
    "address + quotes": ("order address ", "'"),
    "at + colons": ("at", ":"),
    # The dialogue rules' own patterns: "talk to a person", "my orders", "email x@", complaint words.
    "talk to a ...": ("", "talk to a "),
    "my my my ...": ("", "my "),
    "email + address characters": ("email ", "x"),
    "never never ...": ("I want to complain: ", "never "),
    "a long answer to our question": ("", "CUST-"),
}


# A conversation in the middle of a request: the message is read as the answer to this question.
PENDING = [{"role": "user", "content": "I want to complain"},
           {"role": "assistant", "content": "I can help with registering a complaint. Please tell me the customer "
                                            "id and description of the problem."}]


def _per_char(text: str, history: list[dict[str, str]] | None = None) -> float:
    provider = OfflineProvider()
    messages = [*(history or []), {"role": "user", "content": text}]

    async def run() -> None:
        async for _ in provider.stream(messages, []):
            pass

    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        asyncio.run(run())
        best = min(best, time.perf_counter() - started)
    return best / len(text)


def _message(head: str, unit: str, size: int) -> str:
    return head + (unit * (size // len(unit) + 1))[: size - len(head) - 1] + "!"


@pytest.mark.parametrize(("head", "unit"), list(SHAPES.values()), ids=list(SHAPES))
def test_cost_per_character_does_not_grow_with_the_message(head: str, unit: str) -> None:
    costs = {}
    for size in SIZES:
        costs[size] = _per_char(_message(head, unit, size))
        growth = costs[size] / costs[SIZES[0]]
        # Checked as it grows, so a quadratic pattern fails at 4k instead of spending seconds at 16k.
        assert growth <= MAX_GROWTH, f"per-character cost grew {growth:.1f}x from 1k to {size} characters: {costs}"


@pytest.mark.parametrize(("head", "unit"), [("", "CUST-"), ("", "a "), ("", "x@"), ("", "1")],
                         ids=["ids", "words", "address characters", "digits"])
def test_an_answer_to_a_question_costs_linear_time_too(head: str, unit: str) -> None:
    costs = {}
    for size in SIZES:
        costs[size] = _per_char(_message(head, unit, size), PENDING)
        growth = costs[size] / costs[SIZES[0]]
        assert growth <= MAX_GROWTH, f"per-character cost grew {growth:.1f}x from 1k to {size} characters: {costs}"


def test_a_long_well_formed_request_is_still_understood() -> None:
    """The good twin: the rewritten patterns still find what they are for in a long message."""
    filler = "Some context about my day. " * 500
    text = (filler + "Please create an order for customer CUST-001: 2 x SKU WIDGET-9 at 19.99, "
            "ship to 1 Main St, Springfield")
    _, call = answer([{"role": "user", "content": text}], {"make_order": {"parameters": {}}},
                     {"make_order": ORDER_CREATE})
    assert call is not None and call[0] == "make_order"
    assert call[1]["shipping_address"] == "1 Main St, Springfield"
    assert call[1]["customer_id"] == "CUST-001"
