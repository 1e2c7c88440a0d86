"""What every Redis-backed part shares: the client, key names, and one translation of failures.

Keys are namespaced ``msev15:`` and carry the tenant as a hash tag (``msev15:{tenant}:…``): a
session's messages, its entry in the tenant's index, its turn queue and its turns' logs live in
one slot, so the scripts that change them together run atomically on a Redis Cluster too. Every
key has a cap or a TTL.

A Redis that is down or unreachable never fails start-up: calls raise
:class:`~msev15.store.base.StoreUnavailable` (503 ``store_unavailable`` for clients, ``not_ready``
for readiness), and redis-py reconnects on the next call.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Coroutine
from typing import Any, ParamSpec, TypeVar, cast
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as aioredis
import redis.exceptions

from msev15.store.base import StoreUnavailable

P = ParamSpec("P")
R = TypeVar("R")

PREFIX = "msev15"
CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")
CONNECT_TIMEOUT_SECONDS = 2.0
COMMAND_TIMEOUT_SECONDS = 5.0

_FAILURES = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, redis.exceptions.BusyLoadingError,
             redis.exceptions.ReadOnlyError, redis.exceptions.ClusterDownError, OSError)


def is_cluster(url: str) -> bool:
    """``redis+cluster://host:port`` (or ``rediss+cluster://``) names a Redis Cluster by one of its nodes."""
    return urlsplit(url).scheme in CLUSTER_SCHEMES


def connect(url: str, *, socket_timeout: float | None = COMMAND_TIMEOUT_SECONDS) -> aioredis.Redis:
    """A client (a connection pool; nothing is connected yet). ``socket_timeout`` must exceed the
    block of any blocking command sent through it (XREAD BLOCK, SUBSCRIBE): give those their own.

    For a cluster URL, a :class:`redis.asyncio.RedisCluster` that discovers the other nodes from
    the one named and routes each command, script and pipeline by its keys' slot. It speaks the
    same command API as a single server for everything the service sends (every multi-key script
    and transaction keeps its keys in one slot: the ``{tenant}`` hash tag), hence the cast."""
    if is_cluster(url):
        parts = urlsplit(url)
        node = urlunsplit((parts.scheme.removesuffix("+cluster"), parts.netloc, "", parts.query, ""))
        cluster = aioredis.RedisCluster.from_url(node, socket_timeout=socket_timeout,
                                                 socket_connect_timeout=CONNECT_TIMEOUT_SECONDS, decode_responses=True)
        return cast(aioredis.Redis, cluster)
    return aioredis.Redis.from_url(url, socket_timeout=socket_timeout, socket_connect_timeout=CONNECT_TIMEOUT_SECONDS,
                                   health_check_interval=15, decode_responses=True)


def tenant_key(tenant_id: str, *parts: str) -> str:
    """``msev15:{tenant}:part:part``: the tenant id as the hash tag (ids hold no braces)."""
    return ":".join((PREFIX, "{" + tenant_id + "}", *parts))


def text(value: bytes | str) -> str:
    """A reply value as text (our clients decode replies; redis-py's types say bytes or str)."""
    return value if isinstance(value, str) else value.decode()


def text_map(value: dict[bytes | str, bytes | str] | dict[str, str]) -> dict[str, str]:
    return {text(k): text(v) for k, v in value.items()}


def unavailable(exc: BaseException) -> StoreUnavailable:
    return StoreUnavailable(f"Redis is unavailable: {type(exc).__name__}")


def translated(func: Callable[P, Coroutine[Any, Any, R]]) -> Callable[P, Coroutine[Any, Any, R]]:
    """Turn Redis connection failures into StoreUnavailable."""

    @functools.wraps(func)
    async def call(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await func(*args, **kwargs)
        except _FAILURES as exc:
            raise unavailable(exc) from exc

    return call
