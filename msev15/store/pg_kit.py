"""What every PostgreSQL-backed part shares: the pool, the schema migrations, and one translation
of failures.

- **One set of connections per instance** (:class:`~msev15.store.pg_lender.Lender`, lean where
  ``asyncpg.Pool`` cost more per borrow than a statement), owned by the topology:
  :func:`open_database` opens it and applies the migrations; :meth:`Database.close` closes it on
  shutdown.
- **Versioned migrations** (:data:`msev15.store.pg_schema.MIGRATIONS`) recorded in
  ``msev15_migrations``; they run under ``pg_advisory_lock``, one transaction each, so several
  instances starting at once take turns and each version is applied exactly once. A database with a
  version newer than this release knows is refused.
- **Not ready, not dead, at start-up.** :func:`connect_database` (the service's) makes the
  lender without connecting; when PostgreSQL does not answer, the service starts not ready and the first
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

from msev15.store.base import StoreStatus, StoreUnavailable
from msev15.store.pg_lender import Lender, connector
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

Conn: TypeAlias = "asyncpg.Connection[asyncpg.Record]"
"""A connection lent by the instance's :class:`Lender` (what every store method receives)."""


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
    """The instance's connections. ``connection()`` and ``transaction()`` lend one and translate
    failures; ``status()`` is readiness (one bounded ``SELECT 1``)."""

    def __init__(self, pool: Lender, url: str, *, migrated: bool = True) -> None:
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
                async with Lent(self.pool) as conn:
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

    def connection(self) -> Lent:
        """A lent connection (``async with``). Any failure to get one (refused, the database not
        accepting connections, shutting down, none free within the timeout) is StoreUnavailable,
        as is a connection failure inside the block."""
        return Lent(self.pool, self)

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
        await self.pool.close(COMMAND_TIMEOUT_SECONDS)


class Lent:
    """``async with``: a connection from ``lender`` for the block (a class rather than a generator
    context manager: every statement of every store comes through here). With ``database``, its
    migrations are applied first when they are not yet, and connection failures are
    StoreUnavailable. The connection goes back for reuse only when the block ended normally or with
    an error PostgreSQL answered; after a cancellation, a timeout or a lost connection it is closed
    (see :mod:`msev15.store.pg_lender`)."""

    __slots__ = ("_lender", "_database", "_conn")

    def __init__(self, lender: Lender, database: Database | None = None) -> None:
        self._lender = lender
        self._database = database
        self._conn: Conn | None = None

    async def __aenter__(self) -> Conn:
        database = self._database
        if database is not None and not database._migrated:
            await database._migrate()
        try:
            self._conn = await self._lender.acquire(ACQUIRE_TIMEOUT_SECONDS)
        except _START_FAILURES as exc:
            if database is None:
                raise
            raise unavailable(exc) from exc
        return self._conn

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        conn, self._conn = self._conn, None
        assert conn is not None
        self._lender.release(conn, reusable=kind is None or (issubclass(kind, Exception)
                                                             and not issubclass(kind, _FAILURES)))
        if self._database is not None and isinstance(exc, _FAILURES):
            raise unavailable(exc) from exc


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


def lender(url: str, *, max_size: int = 10) -> Lender:
    """The connections to ``url`` (none opened yet): at most ``max_size``, each in UTC with every
    statement bounded by COMMAND_TIMEOUT_SECONDS."""
    return Lender(connector(url, connect_timeout=CONNECT_TIMEOUT_SECONDS, command_timeout=COMMAND_TIMEOUT_SECONDS),
                  max_size=max_size)


async def open_database(url: str, *, max_size: int = 10) -> Database:
    """Connect (bounded) and migrate. Raises :class:`DatabaseError` when PostgreSQL cannot be used."""
    pool = lender(url, max_size=max_size)
    try:
        async with Lent(pool) as conn:
            await migrate(conn)
    except BaseException as exc:
        pool.terminate()
        if isinstance(exc, DatabaseError):
            raise
        if isinstance(exc, _START_FAILURES):
            raise DatabaseError(f"cannot connect to or migrate {masked(url)}: {exc}") from exc
        raise
    return Database(pool, url)


async def connect_database(url: str, *, max_size: int = 10) -> Database:
    """The service's connections: none opened, then the schema migrated when PostgreSQL answers.
    When it does not (down, refused, starting), the database is returned all the same and the
    service starts not ready (see :meth:`Database.status`); the next call that reaches PostgreSQL
    migrates. A schema newer than this program raises :class:`DatabaseError`."""
    pool = lender(url, max_size=max_size)
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
        if self._db is not None:  # every call after the first (no lock on a turn's path)
            return self._db
        async with self._opening:
            if self._db is None:
                try:
                    self._db = await open_database(self.url, max_size=self.max_size)
                except DatabaseError as exc:
                    raise StoreUnavailable(str(exc)) from exc
            return self._db

    async def close(self) -> None:
        db, self._db = self._db, None
        if db is not None and self._owned:
            await db.close()
