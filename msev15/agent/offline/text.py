"""Reading one message: the ids, addresses, amounts and free-text details it names.

Every pattern runs in time linear in the message (a 16,000-character message is allowed, and
this runs on the event loop). The rules that keep it so: whitespace before a capture is
possessive (``\\s*+``: no splitting one run between several ``\\s*``); a match may start only
where its run starts (lookbehinds), so a long run is not rescanned from every position; no
``A.*B`` search (with many A's each scans to the end): :func:`after` looks for B after the first
A; and free text ("ship to ...", "subject ...") is cut by :class:`Phrase` in one forward pass
instead of a lazy ``(.+?)`` tested against the end at every step.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

ORDER_ID = re.compile(r"\b(ORD-[A-Z0-9]{4,})\b", re.I)
COMPLAINT_ID = re.compile(r"\b(CMP-[A-Z0-9]{4,})\b", re.I)
_CUSTOMER = re.compile(r"\bcustomer(?:\s*+(?:id|number|no\.?))?\s*+(?:is\s++)?[:#]?\s*+"
                       r"([A-Za-z0-9][\w-]*\d[\w-]*|(?-i:[A-Z]{2,}[\w-]*))", re.I)
BARE_CUSTOMER = re.compile(r"\b(CUST-[A-Z0-9][A-Z0-9-]*)\b", re.I)
EMAIL = re.compile(r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")
_SKU = re.compile(r"\bsku\s*+[:#]?\s*+([A-Za-z0-9][\w-]*)", re.I)
_QTY = re.compile(r"\b(\d{1,6})\s*+(?:x\b|×|units?\b|pcs\b|pieces\b|items?\b|of\b)", re.I)
_PRICE = re.compile(r"(?:price|at|for|@)\s*+[:]?\s*+[$€£]?\s*+(\d++(?:\.\d{1,2})?)\b(?!\s*+(?:x|units?|pcs))", re.I)
STATUSES = ("pending", "confirmed", "shipped", "delivered", "cancelled")
_STATUS = re.compile(r"\b(" + "|".join(STATUSES) + r"|canceled)\b", re.I)
_CANCEL = re.compile(r"\bcancel\b")
_LIMIT = re.compile(r"\b(?:last|recent|latest|top|first)\s++(\d{1,3})\b", re.I)
_TICKET = re.compile(r"\bTKT-\d{4}-\d{4,}\b")
_NUMBER = re.compile(r"(?<![\d.])(\d++(?:\.\d{1,2})?)(?![\d.])")
_TOKEN = re.compile(r"[^\s,;]++")


class Phrase:
    """Free text after a keyword: from the end of the first ``start`` match up to the first
    ``stop`` match after it, else to the end of that line (``to_end``: of the message), with
    whitespace and quotes trimmed. One forward search for each, so linear in the message."""

    def __init__(self, start: str, stop: str | None = None, *, to_end: bool = False) -> None:
        self.start = re.compile(start, re.I)
        self.stop = re.compile(stop, re.I) if stop else None
        self.to_end = to_end

    def search(self, text: str) -> str | None:
        found = self.start.search(text)
        if found is None:
            return None
        begin = found.end()
        end = len(text) if self.to_end else text.find("\n", begin)
        if end < 0:
            end = len(text)
        if self.stop is not None:
            stop = self.stop.search(text, begin + 1, end + 1)
            if stop is not None:
                end = stop.start()
        value = text[begin:end].strip().strip("\"'").strip()
        return value or None

    def value(self, text: str) -> str | None:
        """:meth:`search` without trailing punctuation: for a detail, not a message body."""
        found = self.search(text)
        return (found.rstrip(".,;") or None) if found else None


_ADDRESS = Phrase(r"(?:ship(?:ping)?(?:\s++it)?\s++to|address(?:\s++is)?|deliver(?:ed)?\s++to)\s*+[:]?\s*+",
                  r"\.\s")
SEARCH_ADDRESS = Phrase(r"\b(?:address|shipped to|going to)\s++(?:contains\s++|like\s++)?")
_SUBJECT = Phrase(r"subject\s*+[:=]?\s*+",
                  r"(?<!\s)[\"']?\s++(?:saying|body|with (?:the )?body|and (?:say|tell)|message)\b")
_BODY = Phrase(r"(?:saying|body\s*+[:=]?|message\s*+[:=]|tell(?:ing)? (?:them|him|her)(?: that)?)\s*+", to_end=True)
RESOLUTION = Phrase(r"(?:resolution|resolved with|because|note)\s*+[:=]?\s*+", to_end=True)


def after(text: str, *patterns: re.Pattern[str]) -> bool:
    """Each pattern matches after the previous one's first match: ``A.*B.*C`` in linear time
    (the first A leaves the most room for the rest, so it is the only one to try)."""
    pos = 0
    for pattern in patterns:
        found = pattern.search(text, pos)
        if found is None:
            return False
        pos = found.end()
    return True


def group(pattern: re.Pattern[str], text: str) -> str | None:
    match = pattern.search(text)
    return match.group(1).strip().rstrip(".,;") if match else None


@dataclass(frozen=True, slots=True)
class Message:
    """What one user message names, parsed once."""

    text: str
    low: str
    order_id: str | None
    complaint_id: str | None
    customer: str | None
    emails: tuple[str, ...]
    status: str | None
    sku: str | None
    quantity: int | None
    price: float | None
    address: str | None
    subject: str | None
    body: str | None
    limit: int | None

    @classmethod
    def parse(cls, text: str) -> Message:
        low = text.lower()
        status = group(_STATUS, low)
        if status == "canceled" or (status is None and _CANCEL.search(low)):
            status = "cancelled"
        order_id, complaint_id = group(ORDER_ID, text), group(COMPLAINT_ID, text)
        qty, price, limit = group(_QTY, text), group(_PRICE, text), group(_LIMIT, text)
        return cls(text, low, order_id.upper() if order_id else None,
                   complaint_id.upper() if complaint_id else None,
                   group(_CUSTOMER, text) or _upper(group(BARE_CUSTOMER, text)),
                   tuple(EMAIL.findall(text)), status, group(_SKU, text), int(qty) if qty else None,
                   float(price) if price else None, _ADDRESS.value(text), _SUBJECT.value(text),
                   _BODY.search(text), int(limit) if limit else None)


def _upper(value: str | None) -> str | None:
    return value.upper() if value else None


def bare(text: str, field: str, *, alone: bool = True) -> str | int | float | None:
    """A bare answer to the question for ``field``: "CUST-1001", an address, "2", "ORD-1A2B3C4D".

    Ids and numbers are taken from a message that is just that value (one token) or that names
    one in the id's own form (only the latter when the question asked for several details,
    ``alone`` False); free text (a description, an address) is the whole message.
    """
    stripped = text.strip().strip("\"'").strip().rstrip(".!")
    tokens = _TOKEN.findall(stripped[:200])
    single = stripped if alone and len(tokens) == 1 and len(stripped) <= 64 and "@" not in stripped else None
    if field in ("customer_email", "to"):
        found = EMAIL.search(text)
        return found.group(0) if found else None
    if field == "customer_id":
        return _upper(group(BARE_CUSTOMER, text)) or single
    if field == "order_id":
        return _upper(group(ORDER_ID, text)) or _upper(single)
    if field == "complaint_id":
        return _upper(group(COMPLAINT_ID, text)) or _upper(single)
    if field in ("quantity", "price", "limit"):
        number = group(_NUMBER, text)
        if number is None:
            return None
        return float(number) if field == "price" else int(float(number))
    if field == "product_sku":
        return group(_SKU, text) or single
    if field in ("status", "new_status"):
        return Message.parse(text).status
    return text.strip() or None


def ticket_id(text: str, today_year: int, checksum: int) -> str:
    found = _TICKET.search(text)
    return found.group(0) if found else f"TKT-{today_year}-{checksum % 1_000_000:06d}"
