"""What every PostgreSQL-backed part shares: the pool, the schema migrations, and one translation
of failures.

- **One pool per instance** (``asyncpg.create_pool``), owned by the topology: :func:`open_database`
  opens it and applies the migrations; :meth:`Database.close` closes it on shutdown.
- **Versioned migrations** (:data:`msev15.store.pg_schema.MIGRATIONS`) recorded in
  ``msev15_migrations``; they run under ``pg_advisory_lock``, one transaction each, so several
  instances starting at once take turns and each version is applied exactly once. A database with a
  version newer than this release knows is refused.
- **Not ready, not dead, at start-up.** :func:`connect_database` (the service's) makes the pool
  without connecting; when PostgreSQL does not answer, the service starts not ready and the first
  call that reaches it (a readiness probe, a request) applies the migrations, then runs what
  waited for them (:meth:`Database.after_migration`). A schema newer than this program is still
  refused at start-up.
- **Unavailable, not broken.** A lost or refused connection, a server shutting down or starting,
  a timeout: :class:`~msev15.store.base.StoreUnavailable` (503 ``store_unavailable`` with
  Retry-After for clients, ``not_ready`` for readiness). The pool reconnects on the next call.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any, ParamSpec, TypeAlias, TypeVar
from urllib.parse import urlsplit, urlunsplit

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from msev15.store.base import StoreStatus, StoreUnavailable
from msev15.store.pg_schema import MIGRATIONS, SCHEMA_VERSION

log = logging.getLogger("store.postgres")

P = ParamSpec("P")
R = TypeVar("R")

CONNECT_TIMEOUT_SECONDS = 2.0
COMMAND_TIMEOUT_SECONDS = 5.0
ACQUIRE_TIMEOUT_SECONDS = 5.0
# Any number will do as long as every instance uses the same one: "msev15" in ASCII.
MIGRATION_LOCK = 0x6D73657631350000

_FAILURES: tuple[type[BaseException], ...] = (
    OSError, TimeoutError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError,
    asyncpg.exceptions.OperatorInterventionError, asyncpg.exceptions.InsufficientResourcesError,
    asyncpg.exceptions.ReadOnlySQLTransactionError, asyncpg.InternalClientError,
)

_START_FAILURES: tuple[type[BaseException], ...] = (*_FAILURES, asyncpg.PostgresError)
_OR_UNAVAILABLE: tuple[type[BaseException], ...] = (StoreUnavailable, *_FAILURES)

Conn: TypeAlias = "PoolConnectionProxy[asyncpg.Record]"
"""A connection lent by the pool (what every store method receives)."""


class DatabaseError(Exception):
    """DATABASE_URL cannot be used at start-up (unreachable, refused, a newer schema)."""


def masked(url: str) -> str:
    """``url`` without its password (for the banner and logs)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def is_unavailable(exc: BaseException) -> bool:
    return isinstance(exc, _FAILURES)


def unavailable(exc: BaseException) -> StoreUnavailable:
    return StoreUnavailable(f"PostgreSQL is unavailable: {type(exc).__name__}")


def translated(func: Callable[P, Coroutine[Any, Any, R]]) -> Callable[P, Coroutine[Any, Any, R]]:
    """Turn PostgreSQL connection failures into StoreUnavailable."""

    @functools.wraps(func)
    async def call(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await func(*args, **kwargs)
        except StoreUnavailable:
            raise
        except _FAILURES as exc:
            raise unavailable(exc) from exc

    return call


class Database:
    """The instance's pool. ``connection()`` and ``transaction()`` hand out a pooled connection and
    translate failures; ``status()`` is readiness (one bounded ``SELECT 1``)."""

    def __init__(self, pool: asyncpg.Pool, url: str, *, migrated: bool = True) -> None:
        self.pool = pool
        self.url = url
        self._migrated = migrated
        self._migrating = asyncio.Lock()
        self._failed = 0  # failed attempts at the migrations: callers that waited for one fail with it
        self._failure: str | None = None
        self._after_migration: list[Callable[[], Awaitable[object]]] = []

    @property
    def migrated(self) -> bool:
        return self._migrated

    def after_migration(self, step: Callable[[], Awaitable[object]]) -> None:
        """Run ``step`` once, right after the migrations that a later call applies (the database
        was down at start-up). A failure of ``step`` is logged, not raised."""
        self._after_migration.append(step)

    async def _migrate(self) -> None:
        """Apply the migrations now (the database was down at start-up); StoreUnavailable while
        it still is, or when its schema is newer than this program's."""
        failed = self._failed
        async with self._migrating:
            if self._migrated:
                return
            if self._failed != failed and self._failure is not None:  # one failed while this call waited
                raise StoreUnavailable(self._failure)
            try:
                async with self.pool.acquire(timeout=ACQUIRE_TIMEOUT_SECONDS) as conn:
                    version = await migrate(conn)
            except DatabaseError as exc:
                log.error("%s", exc)
                self._failed, self._failure = self._failed + 1, str(exc)
                raise StoreUnavailable(self._failure) from exc
            except _START_FAILURES as exc:
                failure = unavailable(exc)
                self._failed, self._failure = self._failed + 1, str(failure)
                raise failure from exc
            self._migrated, self._failure = True, None
            if self._failed:  # it was down at start-up
                log.warning("PostgreSQL at %s answers: schema version %d; ready", masked(self.url), version)
        steps, self._after_migration = self._after_migration, []
        for step in steps:
            try:
                await step()
            except Exception as exc:
                log.warning("a step waiting for the database failed: %s", exc)

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Conn]:
        """A pooled connection. Any failure to get one (refused, the database not accepting
        connections, shutting down, the pool exhausted past the timeout) is StoreUnavailable."""
        if not self._migrated:
            await self._migrate()
        try:
            conn = await self.pool.acquire(timeout=ACQUIRE_TIMEOUT_SECONDS)
        except _START_FAILURES as exc:
            raise unavailable(exc) from exc
        try:
            yield conn
        except StoreUnavailable:
            raise
        except _FAILURES as exc:
            raise unavailable(exc) from exc
        finally:
            try:
                await self.pool.release(conn, timeout=ACQUIRE_TIMEOUT_SECONDS)
            except Exception as exc:  # a broken connection: the pool replaces it
                log.debug("releasing a PostgreSQL connection failed: %s", exc)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Conn]:
        """One transaction on one connection: committed when the block ends, rolled back when it raises
        (a cancellation too)."""
        async with self.connection() as conn, conn.transaction():
            yield conn

    async def status(self) -> StoreStatus:
        try:
            async with self.connection() as conn:
                await conn.fetchval("SELECT 1", timeout=CONNECT_TIMEOUT_SECONDS)
        except _OR_UNAVAILABLE:
            return "unavailable"
        return "healthy"

    async def close(self) -> None:
        try:
            await asyncio.wait_for(self.pool.close(), COMMAND_TIMEOUT_SECONDS)
        except _FAILURES:
            self.pool.terminate()


async def _init(conn: asyncpg.Connection) -> None:
    # Every statement a store runs names its columns; nothing depends on the session's time zone.
    await conn.execute("SET TIME ZONE 'UTC'")


async def _reset(conn: asyncpg.Connection) -> None:
    """What a released connection needs: nothing beyond what the pool always does (roll back an
    open transaction). The default reset would send ``pg_advisory_unlock_all()``, one round trip
    per release, several per turn; no store keeps session state (advisory locks are
    transaction-scoped, the migration lock is released where it is taken)."""


async def migrate(conn: Conn) -> int:
    """Apply the missing migrations under the advisory lock; the schema version afterwards."""
    await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK)
    try:
        await conn.execute("CREATE TABLE IF NOT EXISTS msev15_migrations (version INTEGER PRIMARY KEY, "
                           "name TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())")
        current = int(await conn.fetchval("SELECT COALESCE(MAX(version), 0) FROM msev15_migrations"))
        if current > SCHEMA_VERSION:
            raise DatabaseError(f"the database has schema version {current}, newer than this program supports "
                                f"({SCHEMA_VERSION}); upgrade the program or use another DATABASE_URL")
        for version, name, statements in MIGRATIONS:
            if version <= current:
                continue
            async with conn.transaction():
                for statement in statements:
                    await conn.execute(statement)
                await conn.execute("INSERT INTO msev15_migrations (version, name) VALUES ($1, $2)", version, name)
            log.info("database migrated to schema version %d (%s)", version, name)
            current = version
        return current
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK)


async def open_database(url: str, *, min_size: int = 1, max_size: int = 10) -> Database:
    """Connect (bounded) and migrate. Raises :class:`DatabaseError` when PostgreSQL cannot be used."""
    try:
        pool = await asyncpg.create_pool(url, min_size=min_size, max_size=max_size, init=_init, reset=_reset,
                                         timeout=CONNECT_TIMEOUT_SECONDS, command_timeout=COMMAND_TIMEOUT_SECONDS,
                                         max_inactive_connection_lifetime=60)
    except _START_FAILURES as exc:
        raise DatabaseError(f"cannot connect to {masked(url)}: {exc}") from exc
    try:
        async with pool.acquire() as conn:
            await migrate(conn)
    except BaseException as exc:
        pool.terminate()
        if isinstance(exc, DatabaseError):
            raise
        if isinstance(exc, _START_FAILURES):
            raise DatabaseError(f"cannot migrate {masked(url)}: {exc}") from exc
        raise
    return Database(pool, url)


async def connect_database(url: str, *, max_size: int = 10) -> Database:
    """The service's pool: made without connecting, then migrated when PostgreSQL answers. When it
    does not (down, refused, starting), the pool is returned all the same and the service starts
    not ready (see :meth:`Database.status`); the next call that reaches PostgreSQL migrates. A
    schema newer than this program raises :class:`DatabaseError`, as does a URL asyncpg rejects."""
    try:
        pool = await asyncpg.create_pool(url, min_size=0, max_size=max_size, init=_init, reset=_reset,
                                         timeout=CONNECT_TIMEOUT_SECONDS, command_timeout=COMMAND_TIMEOUT_SECONDS,
                                         max_inactive_connection_lifetime=60)
    except _START_FAILURES as exc:
        raise DatabaseError(f"cannot connect to {masked(url)}: {exc}") from exc
    database = Database(pool, url, migrated=False)
    try:
        await database._migrate()
    except StoreUnavailable as exc:
        if isinstance(exc.__cause__, DatabaseError):
            pool.terminate()
            raise exc.__cause__ from None
        log.warning("PostgreSQL at %s does not answer (%s): starting not ready; the schema is migrated "
                    "once it does", masked(url), exc)
    return database


class OnDemand:
    """A small pool opened (and the schema migrated) on first use: for the stores a CLI opens the
    same way as the service (API keys, tenant profiles), with no I/O at construction. A failure to
    open is StoreUnavailable; the next call tries again."""

    def __init__(self, url: str, *, max_size: int = 4, shared: Database | None = None) -> None:
        """``shared``: the service's own pool (the topology's), used instead and never closed here."""
        self.url = url
        self.max_size = max_size
        self._db: Database | None = shared
        self._owned = shared is None
        self._opening = asyncio.Lock()

    async def get(self) -> Database:
        async with self._opening:
            if self._db is None:
                try:
                    self._db = await open_database(self.url, min_size=0, max_size=self.max_size)
                except DatabaseError as exc:
                    raise StoreUnavailable(str(exc)) from exc
            return self._db

    async def close(self) -> None:
        db, self._db = self._db, None
        if db is not None and self._owned:
            await db.close()
