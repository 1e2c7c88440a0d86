"""Two instances of the service on one Redis, built by create_app in this process: what every
multi-instance test starts from (each instance with its own runner, turn log mirror, coordination
and files under ``root/a`` and ``root/b``; only Redis is shared).

``pair`` (a fixture in conftest) starts them on the test's Redis server with the scripted model;
tests that need no model, or Redis from ``redis_url``, call :func:`two_apps` themselves.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient

from msev15.app import create_app
from tests.conftest import make_settings
from tests.llm_server import ScriptedLLM

Client = TestClient[Any, Any]
Pair = Callable[..., Awaitable[tuple[Client, Client]]]


async def two_apps(aiohttp_client: Any, root: Path, redis_url: str, llm: ScriptedLLM | None = None,
                   **overrides: Any) -> tuple[Client, Client]:
    """Instances ``a`` and ``b`` with SESSION_STORE=redis on ``redis_url`` (and the scripted model,
    without retries, when ``llm`` is given); ``overrides`` go to both instances' settings."""
    model = {} if llm is None else dict(llm_provider="openai", openai_base_url=f"{llm.url}/v1", llm_max_retries=0)
    clients: list[Client] = []
    for name in ("a", "b"):
        settings = make_settings(root / name, session_store="redis", redis_url=redis_url, **{**model, **overrides})
        clients.append(await aiohttp_client(await create_app(settings)))
    return clients[0], clients[1]
