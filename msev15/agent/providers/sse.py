"""Server-sent events read straight off the HTTP response, as bytes.

The openai package would turn every streamed chunk into a typed model object; at a fast model's
token rate that is most of a core. Here each event stays ``(event name, data bytes)`` until the
caller decides it needs to parse it (``orjson``), and only the fields it uses are read.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterable, AsyncIterator
from typing import Any

import orjson

Event = tuple[bytes, bytes]  # (event name, b"" when absent; data, lines joined with b"\n")


def loads(data: bytes) -> Any:
    """orjson, or the standard library for what orjson refuses but JSON allows: an escaped lone
    surrogate (``"\\ud800"``), which a model can be talked into echoing."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(data)


def dumps(value: Any) -> bytes:
    """orjson, or the standard library (escaping) for a lone surrogate that came back into the
    history from such an answer: the next request must still go out."""
    try:
        return orjson.dumps(value)
    except orjson.JSONEncodeError:
        return json.dumps(value).encode()


async def sse_events(chunks: AsyncIterable[bytes]) -> AsyncIterator[Event]:
    """Yield each event of an SSE byte stream when its blank line arrives (``\\n`` or ``\\r\\n``).

    Comments and ``id:``/``retry:`` fields are dropped; an event without data is not dispatched,
    and one cut off by the end of the stream is discarded, as the SSE specification says."""
    pending = b""
    name = b""
    data: list[bytes] = []
    async for chunk in chunks:
        if pending:
            chunk = pending + chunk
        lines = chunk.split(b"\n")
        pending = lines.pop()
        for line in lines:
            if line[-1:] == b"\r":
                line = line[:-1]
            if not line:
                if data:
                    yield name, data[0] if len(data) == 1 else b"\n".join(data)
                    data = []
                name = b""
            elif line[:5] == b"data:":
                data.append(line[6:] if line[5:6] == b" " else line[5:])
            elif line[:6] == b"event:":
                name = line[6:].strip()
