"""JSON response bodies as people read them: "—" and "×" as themselves, not ``\\u2014``.

The bodies are UTF-8 (``application/json; charset=utf-8``), so nothing needs escaping beyond
what JSON requires; the SSE frames already write text this way. A string UTF-8 cannot carry (a
lone surrogate, which a model may echo back) keeps JSON's ``\\udXXX`` escape instead.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from aiohttp import web


def json_response(data: Any, *, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    try:
        body = json.dumps(data, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        body = json.dumps(data).encode("ascii")
    return web.Response(body=body, status=status, headers=headers, content_type="application/json",
                        charset="utf-8")
