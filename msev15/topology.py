"""Which backends run, decided once: the one module that reads SESSION_STORE.

:class:`Topology` is built from the settings when the app is made and owns, as one object with one
lifecycle, every part whose implementation depends on that choice: the session store, the turn log,
per-session coordination, the rate limiters (per IP, per tenant, failed authentications, email
sends), the API key store, the pending calls of paused turns (``PENDING`` in ``store/pending.py``),
the answer feedback (``FEEDBACK`` in ``store/feedback.py``), the handoff records and session
streams (who waits for a person, who holds whom, what each session's stream carried) and the tenant
profiles (``PROFILES`` in ``store/profiles.py``).

- ``memory``: sessions in this process, the in-process turn log and coordination, in-process
  limiters, API keys and tenant profiles in SQLite (``API_KEYS_DB_PATH``).
- ``sqlite``: the same, with sessions in SQLite (``SESSION_DB_PATH``), durable across restarts.
- ``redis``: sessions, turn streams, coordination, limits, API keys and tenant profiles shared by
  every instance on ``REDIS_URL``.
- ``postgres``: sessions in PostgreSQL (``DATABASE_URL``). Without ``REDIS_URL`` one instance
  serves (turn log, coordination and limiters in this process, as with ``sqlite``); with it the
  live parts (turn streams, coordination and queues, rate limits, session streams) are Redis's, as
  with ``redis``.

``DATABASE_URL``, whatever the session store, makes PostgreSQL the system of record: the pool
(:class:`~msev15.store.pg_kit.Database`, migrated at start-up) is opened first and closed last
here, and the durable records (API keys, tenant profiles, pending calls, feedback, handoff
records) live in it.

The parts are published under the keys their own packages declare (``SESSIONS`` in
``store/base.py``, ``TURNS`` in ``events/turnlog.py``, ``COORDINATION`` in
``agent/coordination.py``, ``TENANT_LIMITER`` in ``store/limits.py``), so a handler or the runner
reads an interface and never asks which backend is behind it. A new backend (PostgreSQL) is a new
branch here and new implementations of those interfaces, nothing else (as PostgreSQL was).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from aiohttp import web

from msev15.agent.coordination import COORDINATION, Coordination, LocalCoordination
from msev15.agent.tools.send_limits import SEND_LIMITER, RedisSendLimiter, SendLimiter
from msev15.common.ids import new_id
from msev15.config import Settings
from msev15.events.context import BUS
from msev15.events.session_feed import feed_session_events
from msev15.events.turnlog import TURNS, TurnLog
from msev15.store.apikeys import ApiKeyStore
from msev15.store.auth_limits import FailureLimit, LocalFailureLimit, RedisFailureLimit
from msev15.store.base import SESSIONS, Sessions
from msev15.store.context import ORDERS
from msev15.store.feedback import FEEDBACK, FeedbackStore, MemoryFeedback
from msev15.store.handoffs import HANDOFFS, Handoffs, MemoryHandoffs
from msev15.store.limits import TENANT_LIMITER, RateLimiter
from msev15.store.order_store import OrderStore
from msev15.store.orders import OrderRepository
from msev15.store.pending import PENDING, MemoryPendingCalls, PendingCalls
from msev15.store.pg_kit import Database, connect_database
from msev15.store.profiles import PROFILES, ProfileStore
from msev15.store.session_events import SESSION_EVENTS, MemorySessionEvents, SessionEvents
from msev15.topology_stores import api_key_store, open_sessions, profile_store, redis_url, store_label

log = logging.getLogger("app")

__all__ = ["TOPOLOGY", "Topology", "api_key_store", "open_sessions", "profile_store", "redis_url", "store_label",
           "topology_ctx"]


class Topology:
    """The backends of one instance. Constructing it does no I/O (limiters and the shared turn log
    connect lazily); :meth:`open` opens the session store and starts the turn log, :meth:`close`
    closes everything in reverse."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.kind = settings.session_store
        if self.kind not in ("memory", "sqlite", "redis", "postgres"):
            raise ValueError(f"unknown SESSION_STORE {self.kind!r}")
        if self.kind == "postgres" and not settings.database_url:
            raise ValueError("SESSION_STORE=postgres needs DATABASE_URL")
        # several instances may run on it: the live parts are Redis's
        self.shared = self.kind == "redis" or (self.kind == "postgres" and bool(settings.redis_url))
        self.database: Database | None = None  # the PostgreSQL pool (DATABASE_URL), opened by open()
        self.instance_id = new_id()
        self.turns: TurnLog = self._turn_log()
        self.coordination: Coordination = self._coordination()
        self.ip_limiter = (self.limiter(settings.rate_limit_per_minute, "ip", settings.trusted_proxies)
                           if settings.enable_rate_limiting else None)
        self.tenant_limiter = (self.limiter(settings.rate_limit_per_tenant_per_minute, "tenant")
                               if settings.rate_limit_per_tenant_per_minute else None)
        self.failure_limit = self._failure_limit()
        self.send_limiter = self._send_limiter()
        self._sessions: Sessions | None = None
        self._pending: PendingCalls | None = None
        self._feedback: FeedbackStore | None = None
        self._handoffs: Handoffs | None = None
        self._profiles: ProfileStore | None = None
        self._orders: OrderStore | None = None
        self.session_events: SessionEvents = self._session_events()

    # --- the parts ------------------------------------------------------------------------

    def _turn_log(self) -> TurnLog:
        settings = self.settings
        if self.shared:
            from msev15.events.redis_turnlog import RedisTurnLog  # the Redis client only when used

            return RedisTurnLog(redis_url(settings), self.instance_id, settings.stream_retention_seconds,
                                settings.stream_max_retained_events)
        return TurnLog(settings.stream_retention_seconds, settings.stream_max_retained_events)

    def _coordination(self) -> Coordination:
        if self.shared:
            from msev15.agent.redis_coordination import RedisCoordination
            from msev15.events.redis_turnlog import RedisTurnLog

            assert isinstance(self.turns, RedisTurnLog)
            return RedisCoordination(redis_url(self.settings), self.instance_id, self.turns,
                                     self.settings.redis_lease_seconds)
        return LocalCoordination()

    def limiter(self, limit: int, scope: str, trusted_proxies: tuple[str, ...] = ()) -> RateLimiter:
        """A sliding-window limiter; shared by every instance when the topology is."""
        if self.shared:
            from msev15.store.redis_limits import RedisRateLimiter

            return RedisRateLimiter(redis_url(self.settings), limit, trusted_proxies, scope=scope)
        return RateLimiter(limit, trusted_proxies)

    def _failure_limit(self) -> FailureLimit:
        """AUTH_MAX_FAILURES_PER_MINUTE: one window per client address, shared when the topology is
        (otherwise N instances behind a load balancer allow N times the guesses)."""
        settings = self.settings
        if self.shared:
            return RedisFailureLimit(redis_url(settings), settings.auth_max_failures_per_minute,
                                     settings.trusted_proxies)
        return LocalFailureLimit(settings.auth_max_failures_per_minute, settings.trusted_proxies)

    def _send_limiter(self) -> SendLimiter:
        """EMAIL_MAX_PER_TENANT_PER_HOUR: one window per tenant, shared when the topology is."""
        per_hour = self.settings.email_max_per_tenant_per_hour
        if self.shared and per_hour > 0:
            return RedisSendLimiter(redis_url(self.settings), per_hour)
        return SendLimiter(per_hour)

    def api_key_store(self) -> ApiKeyStore:
        return api_key_store(self.settings, self.database)

    async def open_sessions(self) -> Sessions:
        return await open_sessions(self.settings, self.database)

    async def open_pending(self) -> PendingCalls:
        """The pending calls of paused turns: in PostgreSQL when there is one, else where the sessions
        are (durable and shared alike)."""
        if self.database is not None:
            from msev15.store.pg_pending import PostgresPendingCalls

            return PostgresPendingCalls(self.database)
        if self.kind == "redis":
            from msev15.store.redis_pending import RedisPendingCalls

            return RedisPendingCalls.open(redis_url(self.settings))
        if self.kind == "sqlite":
            from msev15.store.sqlite_pending import SqlitePendingCalls

            return await SqlitePendingCalls.open(self.settings.session_db_path)
        return MemoryPendingCalls()

    @property
    def pending(self) -> PendingCalls:
        assert self._pending is not None, "the topology is not open"
        return self._pending
    async def open_feedback(self) -> FeedbackStore:
        """Answer feedback: in PostgreSQL when there is one, else where the sessions are."""
        settings = self.settings
        if self.database is not None:
            from msev15.store.pg_feedback import PostgresFeedback

            return PostgresFeedback(self.database, session_ttl_seconds=settings.session_ttl_seconds)
        if self.kind == "redis":
            from msev15.store.redis_feedback import RedisFeedback

            return RedisFeedback(redis_url(settings), session_ttl_seconds=settings.session_ttl_seconds)
        if self.kind == "sqlite":
            from msev15.store.sqlite_feedback import SqliteFeedback

            return await SqliteFeedback.open(settings.session_db_path, session_ttl_seconds=settings.session_ttl_seconds)
        return MemoryFeedback(settings.session_ttl_seconds)

    @property
    def feedback(self) -> FeedbackStore:
        assert self._feedback is not None, "the topology is not open"
        return self._feedback

    def _open_handoffs(self) -> Handoffs:
        """Where handoff records live: beside the sessions (this process, the SQLite file's
        folder, or Redis), or in PostgreSQL when there is one, so every instance that shares the
        sessions shares the queue."""
        if self.database is not None:
            from msev15.store.pg_handoffs import PostgresHandoffs

            return PostgresHandoffs(self.database)
        if self.shared:
            from msev15.store.redis_handoffs import RedisHandoffs

            return RedisHandoffs(redis_url(self.settings))
        if self.kind == "sqlite":
            from msev15.store.sqlite_handoffs import SqliteHandoffs, path_beside

            return SqliteHandoffs(path_beside(self.settings.session_db_path))
        return MemoryHandoffs()

    def _session_events(self) -> SessionEvents:
        """The session stream's log: in this process, or shared through Redis (connects lazily)."""
        retention = self.settings.stream_retention_seconds
        if self.shared:
            from msev15.store.redis_session_events import RedisSessionEvents

            return RedisSessionEvents(redis_url(self.settings), retention)
        return MemorySessionEvents(retention)

    @property
    def handoffs(self) -> Handoffs:
        assert self._handoffs is not None, "the topology is not open"
        return self._handoffs

    async def open_orders(self) -> OrderStore:
        """The orders behind the order tools: PostgreSQL when there is one (every replica sees
        every order), else SQLite at ORDER_DB_PATH. ORDER_DB_SEED seeds either."""
        settings = self.settings
        if self.database is not None:
            from msev15.store.pg_orders import PostgresOrders

            orders = PostgresOrders(self.database)
            if settings.order_db_seed and self.database.migrated:
                await orders.seed_demo_orders()
            elif settings.order_db_seed:  # PostgreSQL is down: seed once it answers
                self.database.after_migration(orders.seed_demo_orders)
            return orders
        return await OrderRepository.open(settings.order_db_path, seed=settings.order_db_seed)

    @property
    def orders(self) -> OrderStore:
        assert self._orders is not None, "the topology is not open"
        return self._orders

    @property
    def profiles(self) -> ProfileStore:
        assert self._profiles is not None, "the topology is not open"
        return self._profiles

    @property
    def sessions(self) -> Sessions:
        assert self._sessions is not None, "the topology is not open"
        return self._sessions

    # --- one lifecycle --------------------------------------------------------------------

    def _bind_probes(self) -> None:
        """Sessions (pending calls, profiles) and coordination in one Redis: the admit script reads
        the session's mode (whether it has a paused step, the tenant's profile version), so a
        turn's hold-for-a-person check (its pending-calls look-up, its profile look-up) is not a
        round trip of its own."""
        if not self.shared:
            return
        from msev15.agent.redis_coordination import RedisCoordination
        from msev15.store.redis_pending import RedisPendingCalls
        from msev15.store.redis_profiles import RedisProfiles
        from msev15.store.redis_sessions import RedisSessions

        if not isinstance(self.coordination, RedisCoordination):
            return
        if isinstance(self._sessions, RedisSessions):
            self.coordination.hold_probe = self._sessions.hold_probe
        if isinstance(self._pending, RedisPendingCalls):
            self.coordination.paused_probe = self._pending.paused_probe
        if isinstance(self._profiles, RedisProfiles):
            self.coordination.profile_probe = self._profiles.head_key

    def _bind_look(self) -> None:
        """One instance with stores in PostgreSQL: its coordination reads the session's mode,
        whether it has a paused step, the tenant's profile version and the session's context in
        one statement as it admits a turn (store/pg_admission.py), for those that live in that
        database."""
        if self.shared or self.database is None or not isinstance(self.coordination, LocalCoordination):
            return
        from msev15.store.pg_admission import PostgresAdmissionLook
        from msev15.store.pg_pending import PostgresPendingCalls
        from msev15.store.pg_profiles import PostgresProfiles
        from msev15.store.pg_sessions import PostgresSessions

        sessions = self._sessions if isinstance(self._sessions, PostgresSessions) else None
        pending = isinstance(self._pending, PostgresPendingCalls)
        profiles = isinstance(self._profiles, PostgresProfiles)
        if sessions is None and not pending and not profiles:
            return
        self.coordination.look = PostgresAdmissionLook(self.database, sessions=sessions, pending=pending,
                                                       profiles=profiles,
                                                       context_limit=self.settings.session_max_context_messages)

    async def open(self) -> None:
        """Open the parts; when one fails, what did open is closed again before the error propagates."""
        try:
            if self.settings.database_url:
                self.database = await connect_database(self.settings.database_url)  # down: not ready
            self._sessions = await self.open_sessions()
            self._pending = await self.open_pending()
            self._feedback = await self.open_feedback()
            self._handoffs = self._open_handoffs()
            self._profiles = profile_store(self.settings, self.database)
            self._bind_probes()
            self._bind_look()
            self._orders = await self.open_orders()
        except BaseException:
            await self.close()
            raise
        self.session_events.start()
        self.turns.start()

    async def close(self) -> None:
        """After the runner closed: coordination, then the turn log and sessions, then the limiters."""
        await self.coordination.close()
        await self.turns.close()
        if self._pending is not None:
            await self._pending.close()
        if self._feedback is not None:
            await self._feedback.close()
        if self._sessions is not None:
            await self._sessions.close()
        if self._handoffs is not None:
            await self._handoffs.close()
        if self._profiles is not None:
            await self._profiles.close()
        if self._orders is not None:
            await self._orders.close()
        await self.session_events.close()
        for limiter in (self.ip_limiter, self.tenant_limiter):
            if limiter is not None:
                await limiter.close()
        await self.failure_limit.close()
        await self.send_limiter.close()
        if self.database is not None:
            await self.database.close()


TOPOLOGY = web.AppKey("msev15.topology", Topology)


async def topology_ctx(app: web.Application) -> AsyncIterator[None]:
    """Opens the topology made in create_app and publishes its parts under their packages' keys."""
    topology = app[TOPOLOGY]
    await topology.open()
    app[SESSIONS] = topology.sessions
    app[PENDING] = topology.pending
    app[HANDOFFS] = topology.handoffs
    app[SESSION_EVENTS] = topology.session_events
    feed_session_events(app[BUS], topology.session_events)
    app[TURNS] = topology.turns
    app[COORDINATION] = topology.coordination
    if topology.tenant_limiter is not None:
        app[TENANT_LIMITER] = topology.tenant_limiter
    app[SEND_LIMITER] = topology.send_limiter
    app[FEEDBACK] = topology.feedback
    app[PROFILES] = topology.profiles
    app[ORDERS] = topology.orders
    log.debug("topology %s open (instance %s)", topology.kind, topology.instance_id)
    try:
        yield
    finally:
        await topology.close()

