"""Just enough HTTP/1.1 for a load generator: build requests, parse responses incrementally.

A hand-rolled client spends a fraction of what a full client library spends per request, so on a
two-core machine the generator measures the server rather than itself. Responses may carry a
``Content-Length`` body or a chunked one (SSE streams); nothing else is needed here.
"""

from __future__ import annotations

import json
from typing import Any

_HEAD, _FIXED, _CHUNK_SIZE, _CHUNK_DATA, _TRAILER, _DONE = range(6)


def request_bytes(method: str, path: str, body: bytes | None = None, host: str = "127.0.0.1") -> bytes:
    """One keep-alive HTTP/1.1 request."""
    head = f"{method} {path} HTTP/1.1\r\nHost: {host}\r\n"
    if body is None:
        return (head + "\r\n").encode()
    head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    return head.encode() + body


def json_post(path: str, payload: dict[str, Any]) -> bytes:
    return request_bytes("POST", path, json.dumps(payload).encode())


class ResponseParser:
    """Feed it bytes; ``feed`` returns True once a whole response has arrived.

    ``status`` is set as soon as the head is in (a stream counts as open from then on),
    ``first_data_at`` when the first whole chunk of a chunked body (an SSE stream) arrived, and
    ``body`` holds the body when ``keep_body`` is set. Bytes after the response stay buffered
    for the next one; call ``reset()`` before each request.
    """

    __slots__ = ("_buf", "_need", "_state", "body", "first_data_at", "keep_body", "status")

    def __init__(self, keep_body: bool = False) -> None:
        self.keep_body = keep_body
        self._buf = bytearray()
        self.reset()

    def reset(self) -> None:
        self.status = 0
        self.first_data_at: float | None = None
        self.body = bytearray()
        self._state = _HEAD
        self._need = 0

    @property
    def done(self) -> bool:
        return self._state == _DONE

    def feed(self, data: bytes, now: float) -> bool:
        """Consume ``data`` received at ``now``. Raises ValueError on a malformed response."""
        buf = self._buf
        buf += data
        while True:
            state = self._state
            if state == _HEAD:
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    return False
                self._head(bytes(buf[:end]))
                del buf[:end + 4]
            elif state == _FIXED:
                if len(buf) < self._need:
                    return False
                if self._need:
                    if self.keep_body:
                        self.body += buf[:self._need]
                    del buf[:self._need]
                self._state = _DONE
                return True
            elif state == _CHUNK_SIZE:
                end = buf.find(b"\r\n")
                if end < 0:
                    return False
                size = int(bytes(buf[:end]).split(b";", 1)[0], 16)
                del buf[:end + 2]
                self._state, self._need = (_TRAILER, 0) if size == 0 else (_CHUNK_DATA, size + 2)
            elif state == _CHUNK_DATA:
                if len(buf) < self._need:
                    return False
                if self.first_data_at is None:
                    self.first_data_at = now
                if self.keep_body:
                    self.body += buf[:self._need - 2]
                del buf[:self._need]
                self._state = _CHUNK_SIZE
            elif state == _TRAILER:
                end = buf.find(b"\r\n")
                if end < 0:
                    return False
                del buf[:end + 2]
                if end == 0:
                    self._state = _DONE
                    return True
            else:
                raise ValueError("data after a complete response without a new request")

    def _head(self, head: bytes) -> None:
        if not head.startswith(b"HTTP/1.") or len(head) < 12:
            raise ValueError(f"not an HTTP/1.x response: {head[:40]!r}")
        self.status = int(head[9:12])
        low = head.lower()
        if b"\r\ntransfer-encoding: chunked" in low:
            self._state = _CHUNK_SIZE
            return
        start = low.find(b"\r\ncontent-length:")
        if start < 0:
            raise ValueError("response has neither Content-Length nor chunked encoding")
        end = low.find(b"\r\n", start + 2)
        self._need = int(low[start + 17:end if end >= 0 else None])
        self._state = _FIXED
