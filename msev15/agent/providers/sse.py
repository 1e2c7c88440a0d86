"""Server-sent events read straight off the HTTP response, as bytes.

The openai package would turn every streamed chunk into a typed model object; at a fast model's
token rate that is most of a core. Here each event stays ``(event name, data bytes)`` until the
caller decides it needs to parse it (``orjson``), and only the fields it uses are read.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator

Event = tuple[bytes, bytes]  # (event name, b"" when absent; data, lines joined with b"\n")


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
