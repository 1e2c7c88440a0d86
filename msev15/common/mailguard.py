"""Header injection guards for every message the project sends (the agent's tools, escalation).

Checking the raw input for CR/LF is not enough: Python's email package (3.11 before 3.11.10,
CVE-2024-6923) decodes an RFC 2047 encoded word such as ``=?utf-8?q?a=0D=0AReply-To:_x@evil?=``
into a real line break when it writes the message, and the header ends there. So there are two
checks, both refusing with :class:`HeaderInjection`:

- :func:`check_header_text`, on each value before it is used: no control character or Unicode
  line separator, raw or inside an encoded word (decoded).
- :func:`verify_message`, on the built message: serialize it as it will go out, parse it back,
  and require every part to read back with exactly the headers it was given, each once with the
  intended value. Whatever trick a future input finds, a message that does not survive this
  round trip is never sent.
"""

from __future__ import annotations

import re
from email import policy
from email.errors import HeaderParseError
from email.header import decode_header
from email.message import EmailMessage, Message
from email.parser import BytesParser

# C0/C1 controls and the Unicode line separators: anything a header writer might treat as a line end.
CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
# An RFC 2047 encoded word: =?charset?encoding?text?= (case-insensitive B or Q).
ENCODED_WORD = re.compile(r"=\?[^?\s]*\?[bBqQ]\?[^?\s]*\?=")


class HeaderInjection(ValueError):
    """A header value that could add or change headers (or the body) of a message."""


def _decoded(word: str) -> str | None:
    """The text of one encoded word, or None when it cannot be decoded (refused as well)."""
    try:
        parts = decode_header(word)
        return "".join(p.decode(c or "ascii", "replace") if isinstance(p, bytes) else p for p, c in parts)
    except (HeaderParseError, LookupError, ValueError):
        return None


def header_text_problem(value: str) -> str | None:
    """Why ``value`` may not go into a header (a short phrase), or None when it is safe."""
    if CONTROL.search(value):
        return "contains a line break or control character"
    for match in ENCODED_WORD.finditer(value):
        text = _decoded(match.group())
        if text is None:
            return "contains an RFC 2047 encoded word that cannot be decoded"
        if CONTROL.search(text):
            return "contains an RFC 2047 encoded word that decodes to a line break or control character"
    return None


def check_header_text(field: str, value: str) -> str:
    problem = header_text_problem(value)
    if problem:
        raise HeaderInjection(f"'{field}' {problem}; header injection is not allowed")
    return value


def _normalized(value: object) -> str:
    # Whitespace is left out of the comparison: folding turns spaces into line breaks and back, and
    # the 3.11 folder even drops the space between two encoded words of a long non-ASCII subject.
    # Line breaks themselves are refused before (CONTROL), so nothing can hide in what is left out.
    return "".join(str(value).split())


def _headers(part: Message) -> list[tuple[str, str]]:
    return [(name.lower(), _normalized(value)) for name, value in part.items()]


def verify_message(message: EmailMessage) -> None:
    """Raise :class:`HeaderInjection` unless ``message`` reads back as it was built: per part,
    the same header names in the same order, each with the same value, and no header holding a
    control character."""
    for part in message.walk():
        for name, value in part.items():
            if CONTROL.search(str(value)):  # the value as the message holds it, encoded words decoded
                raise HeaderInjection(f"the {name} header contains a line break or control character; "
                                      "header injection is not allowed")
    wire = message.as_bytes(policy=policy.SMTP)
    parsed = BytesParser(policy=policy.default).parsebytes(wire)
    built, read = list(message.walk()), list(parsed.walk())
    if len(built) != len(read):
        raise HeaderInjection("the message does not read back with the parts it was built with; "
                              "header injection is not allowed")
    for want, got in zip(built, read, strict=False):
        expected, actual = _headers(want), _headers(got)
        if expected != actual:
            names = {n for n, _ in expected} ^ {n for n, _ in actual} or {
                n for (n, v), (_, w) in zip(expected, actual, strict=False) if v != w} or {"?"}
            raise HeaderInjection(f"the message's headers ({', '.join(sorted(names))}) do not read back "
                                  "as they were set; header injection is not allowed")
