"""A2A on two instances sharing one Redis: a task started on A is read, followed and cancelled
through B (the shared turn log and coordination), and stays invisible to another tenant there."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest
from a2a.client import ClientConfig, create_client
from a2a.client.client import Client
from a2a.types import a2a_pb2 as pb
from a2a.utils.errors import TaskNotFoundError

from tests.complaints.server import eventually
from tests.instances import Pair
from tests.llm_server import Reply, ScriptedLLM
from tests.test_a2a import (
    ANSWER,
    base_url,
    kept,
    states,
    text_of,
    user_message,
)


@pytest.fixture
async def clients() -> AsyncIterator[Callable[..., Awaitable[Client]]]:
    made: list[tuple[Client, httpx.AsyncClient]] = []

    async def open_(url: str, headers: dict[str, str] | None = None) -> Client:
        http = httpx.AsyncClient(headers={"A2A-Version": "1.0", **(headers or {})}, timeout=30)
        client = await create_client(url, ClientConfig(streaming=True, httpx_client=http))
        made.append((client, http))
        return client

    yield open_
    for client, http in made:
        await client.close()
        await http.aclose()


async def test_a_task_running_on_a_is_followed_read_and_cancelled_on_b(pair: Pair, llm: ScriptedLLM,
                                                                       clients: Any) -> None:
    a, b = await pair()
    gate = asyncio.Event()
    llm.push(Reply(ANSWER, gate=gate, gate_after=3))
    on_a, on_b = await clients(base_url(a)), await clients(base_url(b))
    stream = on_a.send_message(user_message("Where is my order?", "ctx-x", tenant_id="acme"))
    task_id = kept(await anext(stream)).task.id
    await eventually(lambda: llm.streams_started == 1, "the model stream started")
    with pytest.raises(TaskNotFoundError):  # the default tenant, on B
        await on_b.get_task(pb.GetTaskRequest(id=task_id))
    followed = on_b.subscribe(pb.SubscribeToTaskRequest(id=task_id, tenant="acme"))
    seen = [kept(await anext(followed))]
    assert seen[0].task.status.state == pb.TASK_STATE_WORKING
    gate.set()
    seen += [kept(event) async for event in followed]
    assert text_of(seen) == ANSWER and states(seen)[-1] == pb.TASK_STATE_COMPLETED
    await stream.aclose()
    task = await on_b.get_task(pb.GetTaskRequest(id=task_id, tenant="acme"))
    assert task.status.state == pb.TASK_STATE_COMPLETED and task.artifacts[0].parts[0].text == ANSWER


async def test_cancel_on_b_stops_the_task_running_on_a(pair: Pair, llm: ScriptedLLM, clients: Any) -> None:
    a, b = await pair()
    gate = asyncio.Event()
    llm.push(Reply(ANSWER, gate=gate, gate_after=2))
    on_a, on_b = await clients(base_url(a)), await clients(base_url(b))
    stream = on_a.send_message(user_message("Where is my order?", "ctx-y"))
    task_id = kept(await anext(stream)).task.id
    await eventually(lambda: llm.streams_started == 1, "the model stream started")
    cancelled = await on_b.cancel_task(pb.CancelTaskRequest(id=task_id))
    assert cancelled.status.state == pb.TASK_STATE_CANCELED
    rest = [kept(event) async for event in stream]
    assert states(rest)[-1] == pb.TASK_STATE_CANCELED


async def test_list_tasks_on_either_instance_shows_the_tenants_tasks_of_both(pair: Pair, llm: ScriptedLLM,
                                                                            clients: Any) -> None:
    """The tenant's task index in Redis: newest first, whichever instance ran each task, with
    the status each ended with, the filters, paging and answers; another tenant sees none."""
    a, b = await pair()
    llm.push(Reply("first answer"), Reply("second answer"), Reply("third answer"))
    on_a, on_b = await clients(base_url(a)), await clients(base_url(b))
    ids = []
    for client, text, context in ((on_a, "One", "ctx-1"), (on_a, "Two", "ctx-2"), (on_b, "Three", "ctx-1")):
        events = [kept(event) async for event in client.send_message(user_message(text, context, tenant_id="acme"))]
        assert states(events)[-1] == pb.TASK_STATE_COMPLETED
        ids.append(events[0].task.id)
    newest_first = ids[::-1]
    for client in (on_a, on_b):
        listed = await client.list_tasks(pb.ListTasksRequest(tenant="acme"))
        assert [t.id for t in listed.tasks] == newest_first and listed.total_size == 3
        assert all(t.status.state == pb.TASK_STATE_COMPLETED for t in listed.tasks)
        assert not any(t.artifacts for t in listed.tasks)
    in_1 = await on_b.list_tasks(pb.ListTasksRequest(tenant="acme", context_id="ctx-1", include_artifacts=True))
    assert [t.id for t in in_1.tasks] == [ids[2], ids[0]]
    assert [t.artifacts[0].parts[0].text for t in in_1.tasks] == ["third answer", "first answer"]
    waiting = await on_b.list_tasks(pb.ListTasksRequest(tenant="acme", status=pb.TASK_STATE_INPUT_REQUIRED))
    assert not waiting.tasks and waiting.total_size == 0
    page = await on_b.list_tasks(pb.ListTasksRequest(tenant="acme", page_size=2))
    rest = await on_b.list_tasks(pb.ListTasksRequest(tenant="acme", page_size=2, page_token=page.next_page_token))
    assert [t.id for t in page.tasks] + [t.id for t in rest.tasks] == newest_first and not rest.next_page_token
    assert not (await on_b.list_tasks(pb.ListTasksRequest())).tasks  # the default tenant has none
