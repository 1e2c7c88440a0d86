"""Parsing and validating what clients send; every problem is a 4xx ApiError naming the field."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from msev15.common.tenancy import (
    ID_RE,
    ID_RULE,
    TenantIdError,
    check_tenant,
)
from msev15.config import SETTINGS
from msev15.events.types import BUSY_POLICIES, BusyPolicy
from msev15.handlers.errors import ApiError
from msev15.handlers.tenancy import request_tenant

# What JSON Schema's (ECMAScript's) ``\s`` matches. A message made only of these is blank; Python's
# ``str.isspace`` would also count the C0 separators (U+001C..U+001F) and U+0085, which the
# documented pattern allows. The pattern names the set itself, so every regex dialect reads it alike.
SPACE = r"\t\n\v\f\r \u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"
_SPACE_CHARS = "".join(chr(c) for c in (9, 10, 11, 12, 13, 32, 0xA0, 0x1680, *range(0x2000, 0x200B), 0x2028,
                                        0x2029, 0x202F, 0x205F, 0x3000, 0xFEFF))
MESSAGE_PATTERN = r"^[^\u0000]*[^" + SPACE + r"\u0000][^\u0000]*$"
# Decimal numbers as the API documents them: ASCII digits only (``int()`` also takes "+5", "5_0",
# fullwidth and other Unicode digits; ``str.isdigit`` even passes "²", which ``int()`` refuses).
_DIGITS = re.compile(r"[0-9]{1,10}")

_CHAT_FIELDS = frozenset({"session_id", "message", "tenant_id", "if_busy"})
_UTF8 = frozenset({"utf-8", "utf8", "us-ascii", "ascii"})


def invalid(message: str, field: str | None = None) -> ApiError:
    if field:
        return ApiError(400, "validation_error", message, field=field)
    return ApiError(400, "validation_error", message)


def check_id(value: Any, field: str) -> str:
    """A session id (or another id of the API): the same shape as a tenant id."""
    if not isinstance(value, str):
        raise invalid(f"{field} must be a string", field)
    if not ID_RE.fullmatch(value):  # not match(): "$" would also accept a trailing newline
        raise invalid(f"{field} must be {ID_RULE}", field)
    return value


def check_tenant_id(value: Any) -> str:
    """The one tenant rule (:func:`msev15.common.tenancy.check_tenant`), refused as a 400 that
    names the rule without echoing the value."""
    try:
        return check_tenant(value)
    except TenantIdError as exc:
        raise invalid(exc.rule, "tenant_id") from None


def tenant_from_query(request: web.Request) -> str:
    """The tenant of a request without a body (see :func:`msev15.handlers.tenancy.request_tenant`)."""
    return request_tenant(request)


def decimal(raw: str) -> int | None:
    """``raw`` as a non-negative integer written in ASCII digits (at most 10), else None."""
    return int(raw) if _DIGITS.fullmatch(raw) else None


def int_param(query: Mapping[str, str], name: str, default: int, lo: int, hi: int) -> int:
    """A non-negative integer query parameter within [lo, hi] (``lo`` is 0 or more)."""
    raw = query.get(name)
    if raw is None:
        return default
    value = decimal(raw)
    if value is None or not lo <= value <= hi:
        raise invalid(f"{name} must be an integer between {lo} and {hi}", name)
    return value


async def json_object(request: web.Request) -> dict[str, Any]:
    """The body as a JSON object: 415 for another content type or charset, 400 for bad JSON.

    The whole body must arrive within REQUEST_BODY_TIMEOUT_SECONDS (408 otherwise): aiohttp has no body
    read timeout, so a client trickling bytes (slow loris) would hold its handler forever.
    """
    if request.content_type != "application/json":
        raise ApiError(415, "unsupported_media_type", "Send the body as application/json.",
                       f"got Content-Type {request.content_type!r}")
    if (request.charset or "utf-8").lower() not in _UTF8:
        # RFC 8259: JSON between systems is UTF-8; an unknown codec must not become a 500.
        raise ApiError(415, "unsupported_media_type", "Send the body as UTF-8 encoded application/json.",
                       f"got charset {request.charset!r}")
    settings = request.app[SETTINGS]
    limit, timeout = settings.max_body_bytes, settings.request_body_timeout_seconds
    if request.content_length is not None and request.content_length > limit:
        # Refuse at once: waiting for a body that will be refused anyway only ties up the handler.
        raise ApiError(413, "payload_too_large", "The request body is too large.",
                       f"Content-Length {request.content_length} is over the {limit} byte limit")
    try:
        if request.content.is_eof():  # the whole body is here already (the usual case): no timer
            raw = await request.read()  # client_max_size turns an oversized body into 413
        else:
            async with asyncio.timeout(timeout):
                raw = await request.read()
    except TimeoutError:
        raise ApiError(408, "request_timeout",
                       f"The request body did not arrive within {timeout:g} seconds.") from None
    try:
        body = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ApiError(400, "invalid_json", "The body is not valid UTF-8.") from None
    except (ValueError, RecursionError) as exc:
        raise ApiError(400, "invalid_json", "The body is not valid JSON.", str(exc)[:200]) from None
    if not isinstance(body, dict):
        raise invalid("The body must be a JSON object")
    return body


@dataclass(frozen=True, slots=True)
class ChatRequest:
    session_id: str
    tenant_id: str
    message: str
    if_busy: BusyPolicy = "enqueue"


def chat_request(request: web.Request, body: dict[str, Any], max_chars: int) -> ChatRequest:
    unknown = sorted(set(body) - _CHAT_FIELDS)
    if unknown:
        raise invalid(f"unknown field {unknown[0]!r}; allowed: session_id, message, tenant_id, if_busy, tools",
                      unknown[0])
    if "session_id" not in body:
        raise invalid("session_id is required", "session_id")
    session_id = check_id(body["session_id"], "session_id")
    tenant_id = request_tenant(request, body=body)
    if "message" not in body:
        raise invalid("message is required", "message")
    message = check_message(body["message"], max_chars)
    return ChatRequest(session_id, tenant_id, message, busy_policy(body.get("if_busy", "enqueue")))


def check_message(message: Any, max_chars: int, field: str = "message") -> str:
    """A user message: non-blank text within MAX_MESSAGE_CHARS that any model API accepts."""
    if not isinstance(message, str):
        raise invalid(f"{field} must be a string", field)
    if not message.strip(_SPACE_CHARS):
        raise invalid(f"{field} must not be empty", field)
    if len(message) > max_chars:
        raise invalid(f"{field} is longer than {max_chars} characters", field)
    if "\x00" in message:
        raise invalid(f"{field} must not contain NUL characters", field)
    if not message.isascii():
        try:
            message.encode("utf-8")
        except UnicodeEncodeError:  # a lone "\\ud800" escape: no model API could be sent it
            raise invalid(f"{field} must be valid Unicode text (it has an unpaired surrogate)", field) from None
    return message


def busy_policy(raw: object) -> BusyPolicy:
    for policy in BUSY_POLICIES:
        if raw == policy:
            return policy
    raise invalid("if_busy must be one of: enqueue, reject, interrupt", "if_busy")
