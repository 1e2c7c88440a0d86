"""SESSION_STORE=postgres on one instance (no REDIS_URL): the local coordination reads, in one
statement as it admits a turn (store/pg_admission.py), what the turn used to look up on its own:
the session's mode (held for a person), whether it has a paused step and the tenant's profile
version. These tests pin what that look must keep of the look-ups it replaces, as
test_redis_admission.py does for the Redis admit script: a held session's message is stored for
the person and never reaches the model; another tenant's session of the same id, a session past
its TTL, a session handed back and HANDOFF_ENABLED=false hold nothing back; a new message to a
session with a paused step settles it first, also when that step was paused by a turn still
running as the message was admitted; a profile written by another process applies to the next
turn. PostgreSQL's own statement log shows what a turn sends. A real PostgreSQL, the scripted model.
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import asyncpg
from aiohttp.test_utils import TestClient

from msev15.agent.context import RUNNER
from msev15.agent.coordination import COORDINATION, LocalCoordination
from msev15.common.ids import new_id
from msev15.events.types import TurnRequested
from msev15.store.base import SESSIONS
from msev15.store.pending import PENDING
from msev15.store.pg_admission import PostgresAdmissionLook
from msev15.store.pg_kit import open_database
from msev15.store.pg_profiles import PostgresProfiles
from msev15.store.pg_sessions import PostgresSessions
from msev15.store.sessions import Message
from tests.admission_cases import (
    ANSWER,
    approval_call,
    hold_is_per_tenant_and_per_live_session,
    new_message_settles_a_paused_step_first,
)
from tests.conftest import chat_ok
from tests.llm_server import Reply, ScriptedLLM
from tests.pg_server import PgCluster


async def _pg_service(service: Any, llm: ScriptedLLM, url: str, **extra: Any) -> TestClient:
    client: TestClient = await service(llm_provider="openai", openai_base_url=f"{llm.url}/v1", llm_max_retries=0,
                                       session_store="postgres", database_url=url, **extra)
    assert client.app[COORDINATION].reads_hold  # the admission's look reads the mode
    return client


async def test_a_held_session_is_refused_at_admission(service: Any, llm: ScriptedLLM, pg_cluster: PgCluster) -> None:
    client = await _pg_service(service, llm, pg_cluster.create_database("hold"))
    assert (await chat_ok(client, "s1", "Hi"))["message"] == ANSWER
    assert await client.app[SESSIONS].set_mode("default", "s1", "human")

    body = await chat_ok(client, "s1", "Is anyone there?", if_busy="reject")
    assert (body["status"], body["message"], body["mode"], body["message_count"]) == ("with_human", None, "human", 3)
    assert len(llm.requests) == 1  # never sent to the model

    assert await client.app[SESSIONS].set_mode("default", "s1", "agent", expect="human")
    assert (await chat_ok(client, "s1", "Thanks", if_busy="reject"))["message"] == ANSWER
    assert len(llm.requests) == 2


async def test_a_hold_is_per_tenant_and_per_live_session(service: Any, llm: ScriptedLLM,
                                                         pg_cluster: PgCluster) -> None:
    url = pg_cluster.create_database("tenants")
    client = await _pg_service(service, llm, url, session_ttl_seconds=3600)

    async def idle(tenant: str, session: str) -> None:
        conn = await asyncpg.connect(url)
        try:
            await conn.execute("UPDATE sessions SET last_activity = 1000 WHERE tenant = $1 AND session_id = $2",
                               tenant, session)
        finally:
            await conn.close()

    await hold_is_per_tenant_and_per_live_session(client, llm, idle)


async def test_with_handoff_disabled_a_stored_mode_holds_nothing_back(service: Any, llm: ScriptedLLM,
                                                                      pg_cluster: PgCluster) -> None:
    client: TestClient = await service(llm_provider="openai", openai_base_url=f"{llm.url}/v1", llm_max_retries=0,
                                       session_store="postgres", database_url=pg_cluster.create_database("off"),
                                       handoff_enabled=False)
    await chat_ok(client, "s1", "Hi")
    assert await client.app[SESSIONS].set_mode("default", "s1", "human")
    assert (await chat_ok(client, "s1", "Hi again"))["message"] == ANSWER


async def _paused_service(service: Any, llm: ScriptedLLM, pg_cluster: PgCluster, name: str) -> TestClient:
    return await _pg_service(service, llm, pg_cluster.create_database(name), openai_api_key="k",
                             tool_approval=("update_order_status",))


async def test_a_new_message_still_settles_a_paused_step_first(service: Any, llm: ScriptedLLM,
                                                                 pg_cluster: PgCluster) -> None:
    await new_message_settles_a_paused_step_first(await _paused_service(service, llm, pg_cluster, "paused"), llm)


async def test_a_step_paused_by_a_turn_running_at_admission_is_settled_too(service: Any, llm: ScriptedLLM,
                                                                            pg_cluster: PgCluster) -> None:
    """The second message is admitted while the first turn still runs (no paused step yet): its
    turn must not trust the look's "no paused step", because the first turn pauses one after."""
    client = await _paused_service(service, llm, pg_cluster, "running")
    cancel, _ = await approval_call(client)
    gate = asyncio.Event()
    llm.push(Reply("", tool_calls=[cancel], gate=gate), Reply("Fine, I will leave it."))
    first = asyncio.create_task(chat_ok(client, "s1", "Cancel it", tenant_id="t1"))
    runner = client.app[RUNNER]
    while not runner.open_turns_of(("t1", "s1")) or not llm.requests:  # the first turn waits on the model
        await asyncio.sleep(0.01)
    second = asyncio.create_task(chat_ok(client, "s1", "Actually, keep it", tenant_id="t1"))
    while len(runner.open_turns_of(("t1", "s1"))) < 2:  # the second is admitted and queued behind it
        await asyncio.sleep(0.01)
    gate.set()
    assert (await first)["status"] == "waiting"
    assert (await second)["message"] == "Fine, I will leave it."
    assert "superseded" in json.dumps(llm.requests[-1]) and llm.rejected == []
    assert await client.app[PENDING].get("t1", "s1") is None


class _StatementLog:
    """PostgreSQL's own log of the statements run on one database (``log_statement = 'all'`` for
    its new connections), between two markers a probe connection sends."""

    def __init__(self, cluster: PgCluster, url: str) -> None:
        self.cluster, self.url = cluster, url
        self.database = url.rsplit("/", 1)[1]
        cluster.psql(f"ALTER DATABASE {self.database} SET log_statement = 'all'")

    async def mark(self, marker: str) -> None:
        conn = await asyncpg.connect(self.url)
        try:
            await conn.fetchval(f"SELECT '{marker}'")
        finally:
            await conn.close()

    def between(self, start: str, end: str) -> list[str]:
        text = (self.cluster.root / "pg.log").read_text(errors="replace")
        section = text[text.index(f"SELECT '{start}'"):text.index(f"SELECT '{end}'")]
        # a statement runs on until the next line of the log (they start with the time)
        return [" ".join(s.split()) for s in
                re.findall(r"LOG:  (?:statement|execute [^:]*): (.*?)(?=\n\d{4}-\d\d-\d\d |\Z)", section, re.S)]


async def test_a_turn_sends_the_look_and_the_commit(service: Any, llm: ScriptedLLM, pg_cluster: PgCluster) -> None:
    """A turn on a live session sends two statements: the admission's look (mode, paused step,
    profile version and context in one) and the commit. A profile another process wrote just
    before applies to the next turn, which reads that version's record once."""
    url = pg_cluster.create_database("trips")
    log = _StatementLog(pg_cluster, url)
    client = await _pg_service(service, llm, url)
    assert (await chat_ok(client, "p1", "Hi"))["profile_version"] == 0
    other = PostgresProfiles(url)  # another process's profile store (msev15 profile, another pool)
    try:
        assert await other.put("default", {"instructions": "Answer as Ada."}, "ops") == 1
    finally:
        await other.close()
    await log.mark("changed")
    assert (await chat_ok(client, "p1", "Who are you?"))["profile_version"] == 1
    await log.mark("steady")
    assert (await chat_ok(client, "p1", "And now?"))["profile_version"] == 1
    await log.mark("end")
    assert [r["messages"][0]["content"] for r in llm.requests[-2:]] == ["Answer as Ada."] * 2
    assert [m["content"] for m in llm.requests[-1]["messages"][1:]] == [
        "Hi", ANSWER, "Who are you?", ANSWER, "And now?"]  # the context the look read

    tables = re.compile(r"\b(sessions|messages|pending_turns|profile_heads|profile_versions)\b")
    changed = [s for s in log.between("changed", "steady") if tables.search(s)]
    steady = [s for s in log.between("steady", "end") if tables.search(s)]
    assert len(changed) == 3 and "FROM profile_versions" in changed[1], changed  # the new version's record
    assert len(steady) == 2, steady
    look, commit = steady
    assert all(t in look for t in ("sessions", "pending_turns", "profile_heads", "FROM messages")), look
    assert "UPDATE sessions" in commit


async def test_turns_on_two_instances_read_each_others_messages(service: Any, llm: ScriptedLLM,
                                                                pg_cluster: PgCluster) -> None:
    """Two instances on one database, one session's turns alternating between them: each turn's
    context (read with its admission, from the tail its instance holds when that is current) has
    every message before it."""
    url = pg_cluster.create_database("two")
    one, two = await _pg_service(service, llm, url), await _pg_service(service, llm, url)
    said: list[str] = []
    for n in range(6):
        await chat_ok(one if n % 2 == 0 else two, "s1", f"message {n}")
        assert [m["content"] for m in llm.requests[-1]["messages"][1:]] == [*said, f"message {n}"], n
        said += [f"message {n}", ANSWER]


async def test_admissions_overlapping_on_one_session_trust_no_absence_of_a_paused_step(pg_cluster: PgCluster) -> None:
    """Two messages of one session admitted at once: either may run first and pause a step, so
    neither skips its look-up; one admitted alone does; each says so once."""
    database = await open_database(pg_cluster.create_database("overlap"))
    try:
        coordination = LocalCoordination()
        sessions = await PostgresSessions.open(database, ttl_seconds=3600)
        coordination.look = PostgresAdmissionLook(database, sessions=sessions, pending=True, profiles=True,
                                                  context_limit=10)

        def turn(session: str) -> TurnRequested:
            return TurnRequested(new_id(), "t1", session, "r", "hi", False, "enqueue", None, ())

        first, second, alone = turn("s1"), turn("s1"), turn("s2")
        await asyncio.gather(coordination.admit(first, hold=True), coordination.admit(second, hold=True))
        await coordination.admit(alone, hold=True)
        assert (coordination.unpaused(first), coordination.unpaused(second)) == (False, False)
        assert coordination.unpaused(alone) and not coordination.unpaused(alone)
        assert coordination.profile_version(first) == 0 and coordination.profile_version(first) is None
        # the context is kept on the same terms: an empty one for the new session admitted alone
        assert (coordination.context(first), coordination.context(second)) == (None, None)
        assert coordination.context(alone) == [] and coordination.context(alone) is None
    finally:
        await database.close()


async def test_a_context_read_at_admission_is_not_used_after_a_write_to_its_session(pg_cluster: PgCluster) -> None:
    """Between a turn's admission and its start, other writers than its session's turns may
    change the session: a delete, a person's message, an expiry. The turn must then read its
    context itself rather than use the admission's."""
    database = await open_database(pg_cluster.create_database("marks"))
    try:
        sessions = await PostgresSessions.open(database, ttl_seconds=3600)
        coordination = LocalCoordination()
        coordination.look = PostgresAdmissionLook(database, sessions=sessions, pending=True, profiles=True,
                                                  context_limit=10)

        async def admitted(session: str) -> TurnRequested:
            turn = TurnRequested(new_id(), "t1", session, "r", "hi", False, "enqueue", None, ())
            await coordination.admit(turn, hold=True)
            return turn

        for session in ("kept", "deleted", "noted", "expired"):
            await sessions.commit_turn("t1", session, f"question in {session}", 1.0, [], "an answer")
        kept = await admitted("kept")
        assert [m["content"] for m in coordination.context(kept) or []] == ["question in kept", "an answer"]

        deleted = await admitted("deleted")
        assert await sessions.delete("t1", "deleted") == 2
        assert coordination.context(deleted) is None  # read again: the session is gone

        noted = await admitted("noted")
        await sessions.commit_messages("t1", "noted", [Message("assistant", "a person's note", 2.0)], 2.0)
        assert coordination.context(noted) is None
        assert [m["content"] for m in await sessions.context("t1", "noted", 10)][-1] == "a person's note"

        expired = await admitted("expired")
        sessions.ttl = 1e-9  # everything is idle past its TTL now: the sweep drops it
        assert await sessions.expire() >= 1
        assert coordination.context(expired) is None
    finally:
        await database.close()


def test_admission_reads_kept_for_turns_are_dropped_once_no_turn_could_use_them() -> None:
    """A turn stopped while it queued never takes what its admission read: kept entries older
    than RECHECK_SECONDS go as new ones come, and there are never more than MAX_KEPT."""
    from collections import OrderedDict

    from msev15.agent import coordination as module

    kept: OrderedDict[str, tuple[float, int]] = OrderedDict()
    module._keep(kept, "stopped", (100.0, 1))
    module._keep(kept, "recent", (100.0 + module.RECHECK_SECONDS / 2, 2))
    assert list(kept) == ["stopped", "recent"]
    module._keep(kept, "new", (100.0 + module.RECHECK_SECONDS + 0.1, 3))
    assert list(kept) == ["recent", "new"]
    for n in range(module.MAX_KEPT + 5):
        module._keep(kept, f"t{n}", (200.0, n))
    assert len(kept) == module.MAX_KEPT and f"t{module.MAX_KEPT + 4}" in kept
