"""JSON response bodies as people read them: "—" and "×" as themselves, not ``\\u2014``.

The bodies are UTF-8 (``application/json; charset=utf-8``), so nothing needs escaping beyond
what JSON requires; the SSE frames already write text this way.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from typing import Any

from aiohttp import web

_dumps = functools.partial(json.dumps, ensure_ascii=False)


def json_response(data: Any, *, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.json_response(data, status=status, headers=headers, dumps=_dumps)
