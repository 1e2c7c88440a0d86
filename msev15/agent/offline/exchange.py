"""What the assistant was in the middle of, read back from the session's history.

The offline assistant keeps nothing between turns: the history the provider receives is the
state, so a conversation continues on any instance and with any session store. A question it
asks for a missing detail has one fixed form, ``"I can help with {what}. Please tell me the
{details}."``: reading the last assistant messages back gives the intent being filled (``what``),
the details each question asked for, and the user's answers to them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from msev15.agent.offline.text import Message
from msev15.agent.offline.toolbox import FIELD_NAMES

ASK_PREFIX = "I can help with "
ASK_MIDDLE = ". Please tell me the "
MAX_ROUNDS = 6  # questions followed back; a conversation that needs more starts again
_BY_LENGTH = sorted(FIELD_NAMES.items(), key=lambda item: -len(item[1]))


def question(what: str, fields: Iterable[str]) -> str:
    names = [FIELD_NAMES.get(f, f.replace("_", " ")) for f in fields]
    nice = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
    return f"{ASK_PREFIX}{what}{ASK_MIDDLE}{nice}."


def read_question(text: str) -> tuple[str, list[str]] | None:
    """(what, asked fields) of one of our questions, or None for any other text."""
    if not text.startswith(ASK_PREFIX):
        return None
    middle = text.find(ASK_MIDDLE, len(ASK_PREFIX), 200)
    if middle < 0:
        return None
    what = text[len(ASK_PREFIX):middle]
    start = middle + len(ASK_MIDDLE)
    end = text.find(".", start)
    asked = text[start: end if end >= 0 else len(text)]
    fields = []
    for name, nice in _BY_LENGTH:  # longest first: "email address" is inside "recipient's email address"
        if nice in asked:
            fields.append(name)
            asked = asked.replace(nice, "")
    return what, fields


@dataclass(slots=True)
class Exchange:
    """The user messages of one request, oldest first, and what each of our questions asked."""

    messages: list[Message]
    asked: list[list[str]] = field(default_factory=list)  # asked[i] was answered by messages[i + 1]
    what: str | None = None  # the intent being filled, None for a fresh request
    earlier_answer: str = ""  # our last answer before this exchange (what "email me a copy" sends)

    def latest(self, attr: str) -> Any:
        """The last value any message of the exchange gave for ``attr`` (a correction wins)."""
        for message in reversed(self.messages):
            value = getattr(message, attr)
            if value not in (None, "", ()):
                return value
        return None

    @property
    def first(self) -> Message:
        return self.messages[0]

    @property
    def current(self) -> Message:
        return self.messages[-1]

    def answers(self) -> Iterable[tuple[list[str], Message]]:
        return zip(self.asked, self.messages[1:], strict=False)


def _content(message: dict[str, Any]) -> str:
    content = message.get("content")
    return content if isinstance(content, str) else ""


def read_exchange(messages: list[dict[str, Any]]) -> tuple[Exchange, Exchange | None]:
    """(the current message alone, the exchange it may be answering or None)."""
    end = len(messages) - 1
    while end >= 0 and messages[end].get("role") != "user":
        end -= 1
    current = Message.parse(_content(messages[end]) if end >= 0 else "")
    fresh = Exchange([current], earlier_answer=_earlier_answer(messages, end))
    texts: list[str] = []
    asked: list[list[str]] = []
    what: str | None = None
    index = end - 1
    while index >= 1 and len(asked) < MAX_ROUNDS:
        reply = messages[index]
        if reply.get("role") != "assistant" or reply.get("tool_calls"):
            break
        read = read_question(_content(reply))
        if read is None or (what is not None and read[0] != what):
            break
        what = read[0]
        asked.insert(0, read[1])
        if messages[index - 1].get("role") != "user":
            break
        texts.insert(0, _content(messages[index - 1]))
        index -= 2
    if what is None or len(texts) != len(asked):
        return fresh, None
    pending = Exchange([*(Message.parse(t) for t in texts), current], asked, what,
                       _earlier_answer(messages, index + 1))
    return fresh, pending


def _earlier_answer(messages: list[dict[str, Any]], before: int) -> str:
    """Our last answer (not a question) before ``messages[before]``."""
    for message in reversed(messages[max(0, before - 40):max(0, before)]):
        if message.get("role") == "assistant" and not message.get("tool_calls"):
            text = _content(message)
            if text and read_question(text) is None:
                return text
    return ""
