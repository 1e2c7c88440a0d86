"""Request ids and the one error envelope.

``begin_request`` takes ``X-Request-ID`` from the client (if it is a sane token) or makes one,
binds it for logging and returns it on every response. ``failure_response`` turns every failure
into the spec's envelope ``{error, message, detail?, request_id, timestamp}`` with the right
status; unexpected exceptions are logged with their traceback and become a bare 500. Both run in
the front middleware (handlers/front.py).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from msev15.common.ids import new_id
from msev15.handlers.jsonbody import json_response
from msev15.logs import service as logs
from msev15.store.base import StoreUnavailable

log = logging.getLogger("api.errors")

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:@/+=-]{1,128}$")
REQUEST_ID_HEADER = "X-Request-ID"


_now_cache: tuple[int, str] = (0, "")


def utc_now_iso() -> str:
    """The current UTC time to the second, formatted once per second (it is on every response)."""
    global _now_cache
    second = int(time.time())
    if _now_cache[0] != second:
        _now_cache = (second, iso(second))
    return _now_cache[1]


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


class ApiError(Exception):
    """An error a handler wants the client to see, in the envelope."""

    def __init__(self, status: int, error: str, message: str, detail: str | None = None,
                 headers: Mapping[str, str] | None = None, **fields: Any) -> None:
        super().__init__(message)
        self.status = status
        self.error = error
        self.message = message
        self.detail = detail
        self.headers = dict(headers or {})
        self.fields = fields


def envelope(error: str, message: str, detail: str | None = None, **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"error": error, "message": message}
    if detail:
        body["detail"] = detail
    body.update(fields)
    body["request_id"] = logs.request_id_var.get()
    body["timestamp"] = utc_now_iso()
    return body


def error_response(exc: ApiError) -> web.Response:
    return json_response(envelope(exc.error, exc.message, exc.detail, **exc.fields),
                             status=exc.status, headers=exc.headers)


# Statuses aiohttp raises itself (routing, body size), mapped to our error codes and sentences.
_HTTP_ERRORS: dict[int, tuple[str, str]] = {
    400: ("bad_request", "The request could not be understood."),
    403: ("forbidden", "This request is not allowed."),
    404: ("not_found", "No such endpoint."),
    405: ("method_not_allowed", "This endpoint does not support that method."),
    413: ("payload_too_large", "The request body is too large."),
    415: ("unsupported_media_type", "Send the body as application/json."),
}


# The request's id, and headers a middleware wants on the response (made only when one does),
# added whenever the response is prepared (streams and error pages included).
REQUEST_ID = web.RequestKey("msev15.request_id", str)
EXTRA_HEADERS = web.RequestKey("msev15.extra_headers", dict)


def begin_request(request: web.Request) -> None:
    """Take ``X-Request-ID`` from the client if it is a sane token, else make one; bind it for
    logging and have it sent back on the response."""
    supplied = request.headers.get(REQUEST_ID_HEADER, "")
    request_id = supplied if _REQUEST_ID.match(supplied) else new_id()
    logs.bind(request_id=request_id, session_id="-", tenant_id="-")
    request[REQUEST_ID] = request_id


async def add_extra_headers(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: runs for every response, including SSE streams and error pages."""
    response.headers["Server"] = "msev15"  # not aiohttp's, which names Python's and its own versions
    request_id = request.get(REQUEST_ID)
    if request_id is not None:
        response.headers[REQUEST_ID_HEADER] = request_id
    extra = request.get(EXTRA_HEADERS)
    if extra:
        response.headers.update(extra)


def _closing(response: web.Response) -> web.Response:
    """After a 408 (the body never arrived) or a 413 (a body left unread) the connection's
    position in the byte stream is unknown: close it rather than read the rest as a request."""
    if response.status in (408, 413):
        response.force_close()
    return response


def failure_response(request: web.Request, exc: Exception) -> web.Response:
    """The envelope for a request that failed with ``exc`` (re-raises a redirect)."""
    if isinstance(exc, ApiError):
        return _closing(error_response(exc))
    if isinstance(exc, StoreUnavailable):
        log.warning("store unavailable on %s %s: %s", request.method, request.path, exc)
        return error_response(ApiError(503, "store_unavailable",
                                       "Conversations are unavailable right now (the session store cannot be reached). "
                                       "Please retry.", headers={"Retry-After": "5"}))
    if isinstance(exc, web.HTTPException):
        if exc.status < 400:
            raise exc
        code, message = _HTTP_ERRORS.get(exc.status, ("http_error", exc.reason))
        headers = {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "retry-after")}
        detail = exc.text if exc.status == 413 else None
        return _closing(error_response(ApiError(exc.status, code, message, detail, headers)))
    log.error("unhandled error on %s %s", request.method, request.path, exc_info=exc)
    return error_response(ApiError(500, "internal_error",
                                   "An unexpected error occurred. Quote the request id when reporting it."))
