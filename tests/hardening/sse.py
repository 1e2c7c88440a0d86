"""Reading an SSE body the way the SSE spec does: lines end at LF, CRLF or CR only.

``str.splitlines()`` also breaks at U+2028, U+2029, U+0085 and a few controls, all of which may
appear raw inside a ``data:`` line (the service writes JSON with ``ensure_ascii=False``), so a
parser built on it splits one event in two. Hostile and fuzzed text produces exactly those.
"""

from __future__ import annotations

import json
import re
from typing import Any

_LINE_END = re.compile(r"\r\n|\r|\n")


def data_events(text: str) -> list[dict[str, Any]]:
    """The JSON objects of the body's ``data:`` lines, in order (comments skipped)."""
    return [json.loads(line[len("data: "):]) for line in _LINE_END.split(text) if line.startswith("data: ")]
