"""One turn of the offline assistant: from the history and the turn's tools to a reply.

A message that starts a request of its own (its strong trigger) is taken as new, even in the
middle of another (unless our question asked for free text: "your order has shipped" is then the
message body, not a new request); otherwise it is read as the answer to our last question, so "CUST-1001" or
an email address fills the detail asked for. With nothing pending, a bare id starts the request
it belongs to (an order id: look it up). When nothing fits, the reply says what the assistant
can do, with two example requests.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from msev15.agent.offline.exchange import read_exchange
from msev15.agent.offline.intents import ALIASES, BY_WHAT, FREE_TEXT, INTENTS, Intent, Reply
from msev15.agent.offline.summary import summarise
from msev15.agent.offline.toolbox import Toolbox, two_examples, what_i_can_do

__all__ = ["Toolbox", "answer", "decide"]


def decide(messages: list[dict[str, Any]], box: Toolbox) -> Reply:
    """The reply to the last user message of ``messages``: text, or a tool call to make."""
    fresh, pending = read_exchange(messages)
    current = fresh.current
    started = next((intent for intent in INTENTS if intent.triggered(current)), None)
    if pending is not None and pending.what is not None:
        filling: Intent | None = BY_WHAT.get(ALIASES.get(pending.what, pending.what))
        free_text = bool(pending.asked[-1]) and set(pending.asked[-1]) <= FREE_TEXT
        if filling is not None and (started is None or started is filling
                                    or (free_text and not started.overrides_free_text)):
            return filling.act(pending, box)
    if started is None:
        started = next((i for i in INTENTS if i.weak is not None and i.weak(current)), None)
    if started is not None:
        return started.act(fresh, box)
    return ("Sorry, I didn't understand that: I'm the offline assistant and follow a fixed set of requests. "
            + what_i_can_do(box) + two_examples(box)), None


def answer(messages: list[dict[str, Any]], functions: Mapping[str, Mapping[str, Any]],
           tags: Mapping[str, str]) -> Reply:
    """The reply to ``messages``: a summary when they end with tool results, else :func:`decide`."""
    box = Toolbox(functions, tags)
    if messages and messages[-1].get("role") == "tool":
        return summarise(messages, box), None
    return decide(messages, box)
