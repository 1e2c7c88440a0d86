"""The topology's helpers that need only the settings: the banner's store label and the stores
that the command-line tools open the same way as the service (``msev15 keys``, ``msev15
profile``), plus the session store SESSION_STORE names. Split from :mod:`msev15.topology` to keep
it readable; only these two modules read SESSION_STORE.
"""

from __future__ import annotations

from typing import TypedDict
from urllib.parse import urlsplit

from msev15.config import Settings
from msev15.store.apikeys import ApiKeyStore, SqliteApiKeyStore
from msev15.store.base import Sessions
from msev15.store.memory import MemorySessions
from msev15.store.pg_kit import Database
from msev15.store.profiles import ProfileStore
from msev15.store.sessions import SessionStore
from msev15.store.sqlite_sessions import SqliteSessions


class _Limits(TypedDict):
    max_messages: int
    max_sessions: int
    max_sessions_per_tenant: int
    max_bytes: int


def redis_url(settings: Settings) -> str:
    """REDIS_URL as the Redis parts open it: ``redis+cluster://`` (``rediss+cluster://``) when
    REDIS_CLUSTER=true names a cluster node by a plain URL."""
    url = settings.redis_url
    scheme, sep, rest = url.partition("://")
    if settings.redis_cluster and sep and scheme in ("redis", "rediss"):
        return f"{scheme}+cluster://{rest}"
    return url


def store_label(settings: Settings) -> str:
    """Which session store is in use and where, for the banner (never REDIS_URL's credentials)."""
    if settings.session_store == "sqlite":
        return f"sqlite ({settings.session_db_path}, durable)"
    if settings.session_store == "redis":
        url = urlsplit(redis_url(settings))
        kind = "redis cluster" if url.scheme.endswith("+cluster") else "redis"
        return f"{kind} ({url.hostname or url.path}{f':{url.port}' if url.port else ''}, shared)"
    if settings.session_store == "postgres":
        url = urlsplit(settings.database_url)
        where = f"{url.hostname or ''}{f':{url.port}' if url.port else ''}{url.path}"
        return f"postgres ({where}, {'shared with Redis' if settings.redis_url else 'one instance'})"
    return "memory (this process only, lost on restart)"


def api_key_store(settings: Settings, database: Database | None = None) -> ApiKeyStore:
    """PostgreSQL when DATABASE_URL is set (the system of record), else Redis when the topology is
    shared (every instance on every machine sees a revocation), else SQLite at API_KEYS_DB_PATH.
    The CLI (``msev15 keys``) opens the same store as the service (``database``: the service's
    pool, when the topology has one; the CLI's store opens a small one of its own)."""
    if settings.database_url:
        from msev15.store.pg_apikeys import PostgresApiKeyStore

        return PostgresApiKeyStore(settings.database_url, shared=database)
    if settings.session_store == "redis":
        from msev15.store.redis_apikeys import RedisApiKeyStore

        return RedisApiKeyStore(redis_url(settings))
    return SqliteApiKeyStore(settings.api_keys_db_path)


def profile_store(settings: Settings, database: Database | None = None) -> ProfileStore:
    """Where tenant profiles live: beside the API keys (PostgreSQL when DATABASE_URL is set, Redis
    when shared, else the API keys SQLite file, so they survive restarts with SESSION_STORE=memory
    too). ``msev15 profile`` opens this."""
    if settings.database_url:
        from msev15.store.pg_profiles import PostgresProfiles

        return PostgresProfiles(settings.database_url, shared=database)
    if settings.session_store == "redis":
        from msev15.store.redis_profiles import RedisProfiles

        return RedisProfiles(redis_url(settings))
    from msev15.store.sqlite_profiles import SqliteProfiles

    return SqliteProfiles(settings.api_keys_db_path)


async def open_sessions(settings: Settings, database: Database | None = None) -> Sessions:
    """The session store SESSION_STORE names, with the same limits whichever it is (``database``:
    the topology's PostgreSQL pool, for SESSION_STORE=postgres)."""
    limits: _Limits = {"max_messages": settings.session_max_messages,
                       "max_sessions": settings.session_max_sessions,
                       "max_sessions_per_tenant": settings.session_max_sessions_per_tenant,
                       "max_bytes": settings.session_max_bytes}
    if settings.session_store == "postgres":
        from msev15.store.pg_sessions import PostgresSessions

        assert database is not None, "SESSION_STORE=postgres needs the topology's database"
        fence = None
        if settings.redis_url:  # turns coordinated through Redis commit only while they hold the session
            from msev15.store.redis_fence import RedisFence

            fence = RedisFence(redis_url(settings))
        return await PostgresSessions.open(database, ttl_seconds=settings.session_ttl_seconds, fence=fence, **limits)
    if settings.session_store == "redis":
        from msev15.store.redis_sessions import RedisSessions

        return await RedisSessions.open(redis_url(settings), ttl_seconds=settings.session_ttl_seconds, **limits)
    if settings.session_store == "sqlite":
        return await SqliteSessions.open(settings.session_db_path, ttl_seconds=settings.session_ttl_seconds,
                                         **limits)
    return MemorySessions(SessionStore(settings.session_ttl_seconds, **limits))
