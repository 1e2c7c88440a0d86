"""A2A 1.0 at POST /a2a and the agent card, driven by the real a2a-sdk client (1.x) against the
app built by create_app, under AUTH_MODE=none and api_key."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from a2a.client import A2ACardResolver, ClientConfig, create_client
from a2a.client.client import Client
from a2a.compat.v0_3.jsonrpc_transport import CompatJsonRpcTransport
from a2a.types import a2a_pb2 as pb
from a2a.utils.errors import TaskNotCancelableError, TaskNotFoundError, UnsupportedOperationError
from aiohttp.test_utils import TestClient

from msev15.common.env import SettingsError
from msev15.config import load_settings
from msev15.handlers.a2a_card import agent_card
from tests.llm_server import Reply, ScriptedLLM
from tests.security.authkit import create_keys

ANSWER = "Your order ORD-1A2B3C4D shipped yesterday and arrives on Friday"


def base_url(client: TestClient) -> str:
    return str(client.make_url("")).rstrip("/")


def user_message(text: str, context_id: str = "", **metadata: Any) -> pb.SendMessageRequest:
    message = pb.Message(message_id="m-" + text[:8].replace(" ", "-"), role=pb.ROLE_USER, parts=[pb.Part(text=text)],
                         context_id=context_id)
    if metadata:
        message.metadata.update(metadata)
    return pb.SendMessageRequest(message=message)


@pytest.fixture
async def clients() -> AsyncIterator[Callable[..., Any]]:
    made: list[tuple[Client, httpx.AsyncClient]] = []

    async def open_(url: str, headers: dict[str, str] | None = None, streaming: bool = True) -> Client:
        http = httpx.AsyncClient(headers={"A2A-Version": "1.0", **(headers or {})}, timeout=30)
        client = await create_client(url, ClientConfig(streaming=streaming, httpx_client=http))
        made.append((client, http))
        return client

    yield open_
    for client, http in made:
        await client.close()
        await http.aclose()


def kept(event: pb.StreamResponse) -> pb.StreamResponse:
    """A copy: the client reuses the objects it yields."""
    copy = pb.StreamResponse()
    copy.CopyFrom(event)
    return copy


async def events_of(client: Client, request: pb.SendMessageRequest) -> list[pb.StreamResponse]:
    return [kept(event) async for event in client.send_message(request)]


def text_of(events: list[pb.StreamResponse]) -> str:
    """The answer as a client assembles it: the snapshot's artifact, then the appended chunks."""
    text = ""
    for event in events:
        if event.HasField("task"):
            text = "".join(p.text for a in event.task.artifacts for p in a.parts)
        elif event.HasField("artifact_update"):
            update = event.artifact_update
            chunk = "".join(p.text for p in update.artifact.parts)
            text = text + chunk if update.append else chunk
    return text


def states(events: list[pb.StreamResponse]) -> list[int]:
    return [e.status_update.status.state for e in events if e.HasField("status_update")]


async def scripted(service: Any, llm: ScriptedLLM, **overrides: Any) -> TestClient:
    client: TestClient = await service(llm_provider="openai", openai_base_url=f"{llm.url}/v1", openai_api_key="k",
                                       **overrides)
    return client


# --- the card ------------------------------------------------------------------------------------


async def test_the_card_is_discovered_and_points_at_the_json_rpc_endpoint(service) -> None:
    client = await service()
    async with httpx.AsyncClient() as http:
        card = await A2ACardResolver(http, base_url(client)).get_agent_card()
    assert card.name == "CustomerServiceAgent" and card.capabilities.streaming
    assert not card.capabilities.push_notifications
    assert {(i.url, i.protocol_binding, i.protocol_version) for i in card.supported_interfaces} == {
        (base_url(client) + "/a2a", "JSONRPC", "1.0"), (base_url(client) + "/a2a", "JSONRPC", "0.3")}
    assert {s.id for s in card.skills} == {"orders", "complaints", "email", "escalation", "handoff"}
    assert set(card.default_input_modes) == {"text/plain", "application/json"}
    assert not card.security_schemes  # AUTH_MODE=none


async def test_behind_a_tls_proxy_the_card_advertises_the_public_base_url(service) -> None:
    """The proxy speaks https to clients and http to us: the card must name what clients reach."""
    client = await service(public_base_url="https://support.example.com/agents")
    async with httpx.AsyncClient() as http:
        card = await A2ACardResolver(http, base_url(client)).get_agent_card()
    assert {i.url for i in card.supported_interfaces} == {"https://support.example.com/agents/a2a"}


def test_a_public_base_url_must_be_an_http_url_without_query() -> None:
    assert load_settings(environ={"PUBLIC_BASE_URL": "https://x.example/"}).public_base_url == "https://x.example"
    for bad in ("ftp://x.example", "x.example", "https://x.example/?a=1", "https://x.example/#top"):
        with pytest.raises(SettingsError, match="PUBLIC_BASE_URL"):
            load_settings(environ={"PUBLIC_BASE_URL": bad})


async def test_the_card_is_public_and_names_the_api_key_schemes(service, tmp_path: Path) -> None:
    db = tmp_path / "keys.db"
    keys = await create_keys(db, "acme")
    client = await service(auth_mode="api_key", api_keys_db_path=str(db))
    resp = await client.get("/.well-known/agent-card.json")  # no credential
    assert resp.status == 200
    raw = await resp.text()
    card = await resp.json()
    assert card["securitySchemes"]["apiKey"]["apiKeySecurityScheme"] == {
        "location": "header", "name": "X-API-Key", "description": card["securitySchemes"]["apiKey"][
            "apiKeySecurityScheme"]["description"]}
    assert card["securitySchemes"]["bearer"]["httpAuthSecurityScheme"]["scheme"] == "Bearer"
    assert keys["acme"][1] not in raw and "k" != raw  # no key, no secret setting
    assert card["url"].endswith("/a2a") and card["preferredTransport"] == "JSONRPC"  # the 0.3 fields too
    unauth = await client.post("/a2a", json={"jsonrpc": "2.0", "id": 1, "method": "GetTask", "params": {"id": "x"}})
    assert unauth.status == 401 and unauth.headers["WWW-Authenticate"].startswith("Bearer")


# --- send, stream, get, list -----------------------------------------------------------------------


async def test_send_returns_the_completed_task_and_get_reads_it(service, llm: ScriptedLLM, clients) -> None:
    llm.push(Reply(ANSWER))
    client = await scripted(service, llm)
    a2a = await clients(base_url(client), streaming=False)
    [event] = await events_of(a2a, user_message("Where is my order?", "ctx-1"))
    task = event.task
    assert task.status.state == pb.TASK_STATE_COMPLETED and task.context_id == "ctx-1"
    assert [p.text for p in task.artifacts[0].parts] == [ANSWER]
    again = await a2a.get_task(pb.GetTaskRequest(id=task.id))
    assert again == task
    history = await (await client.get("/api/v1/sessions/ctx-1/history")).json()
    assert [m["content"] for m in history["messages"]] == ["Where is my order?", ANSWER]


async def test_a_message_without_context_starts_a_new_session(service, llm: ScriptedLLM, clients) -> None:
    llm.push(Reply("one"), Reply("two"))
    client = await scripted(service, llm)
    a2a = await clients(base_url(client), streaming=False)
    [first] = await events_of(a2a, user_message("Hi"))
    [second] = await events_of(a2a, user_message("Hi"))
    assert first.task.context_id and first.task.context_id != second.task.context_id


async def test_stream_sends_the_task_then_chunks_then_the_end(service, llm: ScriptedLLM, clients) -> None:
    llm.push(Reply(ANSWER))
    client = await scripted(service, llm)
    a2a = await clients(base_url(client))
    events = await events_of(a2a, user_message("Where is my order?", "ctx-s"))
    assert events[0].HasField("task") and events[0].task.status.state in (pb.TASK_STATE_SUBMITTED,
                                                                          pb.TASK_STATE_WORKING)
    assert states(events)[-1] == pb.TASK_STATE_COMPLETED and pb.TASK_STATE_WORKING in states(events)
    chunks = [e.artifact_update for e in events if e.HasField("artifact_update")]
    assert len(chunks) > 2 and chunks[-1].last_chunk and not any(c.last_chunk for c in chunks[:-1])
    assert text_of(events) == ANSWER
    task = await a2a.get_task(pb.GetTaskRequest(id=events[0].task.id))
    assert task.artifacts[0].parts[0].text == ANSWER


async def test_list_tasks_of_the_tenant_newest_first_with_filters(service, llm: ScriptedLLM, clients) -> None:
    llm.push(Reply("a"), Reply("b"), Reply("c"))
    client = await scripted(service, llm)
    a2a = await clients(base_url(client), streaming=False)
    ids = []
    for context in ("ctx-a", "ctx-a", "ctx-b"):
        [event] = await events_of(a2a, user_message("Hello", context))
        ids.append(event.task.id)
    listed = await a2a.list_tasks(pb.ListTasksRequest())
    assert [t.id for t in listed.tasks] == ids[::-1] and listed.total_size == 3
    assert not any(t.artifacts for t in listed.tasks)  # includeArtifacts is off by default
    in_a = await a2a.list_tasks(pb.ListTasksRequest(context_id="ctx-a", include_artifacts=True))
    assert [t.id for t in in_a.tasks] == ids[1::-1] and in_a.tasks[0].artifacts[0].parts[0].text == "b"
    page = await a2a.list_tasks(pb.ListTasksRequest(page_size=2))
    rest = await a2a.list_tasks(pb.ListTasksRequest(page_size=2, page_token=page.next_page_token))
    assert [t.id for t in page.tasks] + [t.id for t in rest.tasks] == ids[::-1] and not rest.next_page_token


# --- cancel, resubscribe -----------------------------------------------------------------------------


async def test_cancel_while_streaming_ends_the_stream_canceled(service, llm: ScriptedLLM, clients) -> None:
    gate = asyncio.Event()
    llm.push(Reply(ANSWER, gate=gate, gate_after=3))
    client = await scripted(service, llm)
    a2a = await clients(base_url(client))
    seen: list[pb.StreamResponse] = []
    task_id = ""
    stream = a2a.send_message(user_message("Where is my order?", "ctx-c"))
    async for event in stream:
        seen.append(kept(event))
        if event.HasField("artifact_update") and not task_id:
            task_id = event.artifact_update.task_id
            cancelled = await a2a.cancel_task(pb.CancelTaskRequest(id=task_id))
            assert cancelled.status.state == pb.TASK_STATE_CANCELED
    assert states(seen)[-1] == pb.TASK_STATE_CANCELED and "ORD" not in text_of(seen)  # cut before the gate
    with pytest.raises(TaskNotCancelableError):
        await a2a.cancel_task(pb.CancelTaskRequest(id=task_id))
    assert (await a2a.get_task(pb.GetTaskRequest(id=task_id))).status.state == pb.TASK_STATE_CANCELED


async def test_resubscribe_after_a_dropped_stream_gets_each_chunk_once(service, llm: ScriptedLLM, clients) -> None:
    gate = asyncio.Event()
    llm.push(Reply(ANSWER, gate=gate, gate_after=4))
    client = await scripted(service, llm)
    a2a = await clients(base_url(client))
    stream = a2a.send_message(user_message("Where is my order?", "ctx-r"))
    first: list[pb.StreamResponse] = []
    async for event in stream:
        first.append(kept(event))
        if sum(e.HasField("artifact_update") for e in first) == 2:
            break
    await stream.aclose()  # the client drops the stream; the turn goes on
    task_id = first[0].task.id
    resumed = a2a.subscribe(pb.SubscribeToTaskRequest(id=task_id))
    again = [kept(await anext(resumed))]
    assert again[0].HasField("task") and again[0].task.status.state == pb.TASK_STATE_WORKING
    gate.set()
    again += [kept(event) async for event in resumed]
    assert text_of(again) == ANSWER  # the snapshot holds what came before; nothing twice, nothing lost
    assert states(again)[-1] == pb.TASK_STATE_COMPLETED
    with pytest.raises(UnsupportedOperationError):  # an ended task is read, not followed
        [e async for e in a2a.subscribe(pb.SubscribeToTaskRequest(id=task_id))]


# --- tenants -------------------------------------------------------------------------------------------


async def test_another_tenants_task_is_not_found(service, llm: ScriptedLLM, clients, tmp_path: Path) -> None:
    db = tmp_path / "keys.db"
    keys = await create_keys(db, "acme", "globex")
    llm.push(Reply("acme's answer"))
    client = await scripted(service, llm, auth_mode="api_key", api_keys_db_path=str(db))
    acme = await clients(base_url(client), {"X-API-Key": keys["acme"][1]}, streaming=False)
    globex = await clients(base_url(client), {"Authorization": f"Bearer {keys['globex'][1]}"})
    [event] = await events_of(acme, user_message("Hello", "ctx-t"))
    task_id = event.task.id
    for call in (lambda: globex.get_task(pb.GetTaskRequest(id=task_id)),
                 lambda: globex.cancel_task(pb.CancelTaskRequest(id=task_id))):
        with pytest.raises(TaskNotFoundError):
            await call()
    with pytest.raises(TaskNotFoundError):
        [e async for e in globex.subscribe(pb.SubscribeToTaskRequest(id=task_id))]
    assert not (await globex.list_tasks(pb.ListTasksRequest())).tasks
    assert [t.id for t in (await acme.list_tasks(pb.ListTasksRequest())).tasks] == [task_id]


async def test_without_auth_the_tenant_is_the_message_metadatas(service, llm: ScriptedLLM, clients) -> None:
    llm.push(Reply("hello acme"))
    client = await scripted(service, llm)
    a2a = await clients(base_url(client), streaming=False)
    [event] = await events_of(a2a, user_message("Hello", "ctx-m", tenant_id="acme"))
    with pytest.raises(TaskNotFoundError):  # the default tenant does not see it
        await a2a.get_task(pb.GetTaskRequest(id=event.task.id))
    task = await a2a.get_task(pb.GetTaskRequest(id=event.task.id, tenant="acme"))
    assert task.status.state == pb.TASK_STATE_COMPLETED
    assert (await client.get("/api/v1/sessions/ctx-m/history?tenant_id=acme")).status == 200


# --- A2A 0.3 ----------------------------------------------------------------------------------------


async def test_a_0_3_named_call_from_the_sdks_0_3_transport(service, llm: ScriptedLLM) -> None:
    llm.push(Reply(ANSWER), Reply(ANSWER))
    client = await scripted(service, llm)
    async with httpx.AsyncClient(timeout=30) as http:
        card = await A2ACardResolver(http, base_url(client)).get_agent_card()
        transport = CompatJsonRpcTransport(http, card, base_url(client) + "/a2a", is_shared_httpx=True)
        sent = await transport.send_message(user_message("Where is my order?", "ctx-03"))
        assert sent.task.status.state == pb.TASK_STATE_COMPLETED
        assert sent.task.artifacts[0].parts[0].text == ANSWER
        got = await transport.get_task(pb.GetTaskRequest(id=sent.task.id))
        assert got.id == sent.task.id and got.context_id == "ctx-03"
        streamed = [e async for e in transport.send_message_streaming(user_message("Again", "ctx-03"))]
        assert text_of(streamed) == ANSWER and states(streamed)[-1] == pb.TASK_STATE_COMPLETED
        raw = await http.post(base_url(client) + "/a2a", json={"jsonrpc": "2.0", "id": "r1", "method": "tasks/get",
                                                                "params": {"id": sent.task.id}})
        body = raw.json()["result"]
        assert body["kind"] == "task" and body["status"]["state"] == "completed"
        listed = await http.post(base_url(client) + "/a2a", json={"jsonrpc": "2.0", "id": 2, "method": "tasks/list",
                                                                   "params": {"contextId": "ctx-03"}})
        tasks = listed.json()["result"]["tasks"]
        assert [t["kind"] for t in tasks] == ["task", "task"] and tasks[1]["id"] == sent.task.id
        unknown = await http.post(base_url(client) + "/a2a", json={"jsonrpc": "2.0", "id": 3, "method": "tasks/get",
                                                                    "params": {"id": "nope"}})
        assert unknown.json()["error"]["code"] == -32001


def test_the_card_names_a_bearer_jwt_under_auth_mode_jwt() -> None:
    card = agent_card("https://agents.example/a2a", "jwt")
    assert list(card.security_schemes) == ["bearer"]
    assert card.security_schemes["bearer"].http_auth_security_scheme.bearer_format == "JWT"
    assert [dict(r.schemes) for r in card.security_requirements] == [{"bearer": pb.StringList()}]


# --- bad input: the protocol's errors, each next to the good call above ---------------------------------

def rpc(method: str, params: Any = None, rpc_id: Any = 7) -> dict[str, Any]:
    body: dict[str, Any] = {"jsonrpc": "2.0", "id": rpc_id, "method": method}
    if params is not None:
        body["params"] = params
    return body


def send_params(*parts: dict[str, Any], **message: Any) -> dict[str, Any]:
    return {"message": {"messageId": "m1", "role": "ROLE_USER", "parts": list(parts), **message}}


DECISION = {"data": {"decisions": [{"call_id": "c1", "approve": True}]}}

BAD = [
    ("no message", rpc("SendMessage", {}), -32602),
    ("blank text", rpc("SendMessage", send_params({"text": "   "})), -32602),
    ("a file part", rpc("SendMessage", send_params({"url": "https://x.test/a.pdf"})), -32005),
    ("params of a wrong type", rpc("SendMessage", [1, 2]), -32602),
    ("a field of a wrong type", rpc("SendMessage", {"message": {"parts": "text"}}), -32602),
    ("a bad context id", rpc("SendMessage", send_params({"text": "Hi"}, contextId="../etc")), -32602),
    ("an agent's message", rpc("SendMessage", send_params({"text": "Hi"}, role="ROLE_AGENT")), -32602),
    ("a data part that is not an answer", rpc("SendMessage", send_params({"data": {"x": 1}})), -32602),
    ("a decision without approve", rpc("SendMessage", send_params(
        {"data": {"decisions": [{"call_id": "c1"}]}}, taskId="t1")), -32602),
    ("an output without output", rpc("SendMessage", send_params(
        {"data": {"outputs": [{"call_id": "c1"}]}}, taskId="t1")), -32602),
    ("decisions without a task", rpc("SendMessage", send_params(DECISION)), -32004),
    ("decisions for an unknown task", rpc("SendMessage", send_params(DECISION, taskId="nope")), -32001),
    ("unknown task", rpc("GetTask", {"id": "nope"}), -32001),
    ("no task id", rpc("GetTask", {}), -32602),
    ("cancel an unknown task", rpc("CancelTask", {"id": "nope"}), -32001),
    ("page size too big", rpc("ListTasks", {"pageSize": 1000}), -32602),
    ("a made-up page token", rpc("ListTasks", {"pageToken": "abc"}), -32602),
    ("unknown method", rpc("DoSomething", {}), -32601),
    ("push notifications", rpc("CreateTaskPushNotificationConfig", {}), -32003),
    ("push notifications (0.3)", rpc("tasks/pushNotificationConfig/set", {}), -32003),
    ("extended card", rpc("GetExtendedAgentCard", {}), -32004),
    ("0.3 params that are not 0.3", rpc("message/send", {"message": {"parts": 3}}), -32602),
    ("no jsonrpc version", {"id": 1, "method": "GetTask", "params": {"id": "x"}}, -32600),
    ("a batch", [rpc("GetTask", {"id": "x"})], -32600),
    ("an id of a wrong type", rpc("GetTask", {"id": "x"}, rpc_id=[1]), -32600),
]


@pytest.mark.parametrize(("case", "body", "code"), BAD, ids=[case for case, _, _ in BAD])
async def test_bad_calls_get_the_protocols_error(service, case: str, body: Any, code: int) -> None:
    client = await service()
    resp = await client.post("/a2a", json=body, headers={"A2A-Version": "1.0"})
    assert resp.status == 200, case
    answer = await resp.json()
    assert answer["jsonrpc"] == "2.0" and answer["error"]["code"] == code, answer
    assert isinstance(answer["error"]["message"], str) and "Traceback" not in answer["error"]["message"]
    assert answer["id"] == (body["id"] if isinstance(body, dict) and code != -32600 else answer["id"])


async def test_a_body_that_is_not_json_is_a_parse_error(service) -> None:
    client = await service()
    resp = await client.post("/a2a", data=b"{not json", headers={"Content-Type": "application/json"})
    assert resp.status == 200
    assert await resp.json() == {"jsonrpc": "2.0", "id": None, "error": {
        "code": -32700, "message": "the body is not JSON (JSONDecodeError)"}}


async def test_an_unknown_protocol_version_is_refused(service) -> None:
    client = await service()
    resp = await client.post("/a2a", json=rpc("GetTask", {"id": "x"}), headers={"A2A-Version": "2.0"})
    assert (await resp.json())["error"]["code"] == -32009


async def test_decisions_for_a_finished_task_are_unsupported(service, llm: ScriptedLLM) -> None:
    llm.push(Reply("done"))
    client = await scripted(service, llm)
    sent = await (await client.post("/a2a", json=rpc("SendMessage", send_params({"text": "Hi"})))).json()
    task_id = sent["result"]["task"]["id"]
    again = await client.post("/a2a", json=rpc("SendMessage", send_params(DECISION, taskId=task_id)))
    error = (await again.json())["error"]
    assert error["code"] == -32004 and "not waiting" in error["message"]


async def test_the_playground_header_links_the_agent_card(service) -> None:
    client = await service()
    page = await (await client.get("/")).text()
    header = page[page.index("<header>"):page.index("</header>")]
    assert 'href="/.well-known/agent-card.json"' in header
    assert (await client.get("/.well-known/agent-card.json")).status == 200


async def test_the_tenant_rate_limit_and_the_metrics_apply_as_for_rest(service, llm: ScriptedLLM) -> None:
    llm.push(Reply("first"))
    client = await scripted(service, llm, rate_limit_per_tenant_per_minute=1)
    body = rpc("SendMessage", send_params({"text": "Hi"}, metadata={"tenant_id": "acme"}))
    first = await client.post("/a2a", json=body)
    assert (await first.json())["result"]["task"]["status"]["state"] == "TASK_STATE_COMPLETED"
    second = await client.post("/a2a", json=body)
    assert second.status == 429 and int(second.headers["Retry-After"]) >= 1
    assert (await second.json())["error"] == "tenant_rate_limited"
    other = await client.post("/a2a", json=rpc("GetTask", {"id": "x", "tenant": "globex"}))
    assert (await other.json())["error"]["code"] == -32001  # another tenant's budget is its own
    metrics = await (await client.get("/metrics")).text()
    assert 'route="/a2a"' in metrics


async def test_a_lone_surrogate_from_the_model_is_kept_as_its_escape(service, llm: ScriptedLLM, clients) -> None:
    """Protobuf (and the client parsing the stream) needs valid UTF-8; a model can send "\\ud800"."""
    llm.push(Reply("broken \ud800 text"), Reply("broken \ud800 text"))
    client = await scripted(service, llm)
    a2a = await clients(base_url(client))
    events = await events_of(a2a, user_message("Hi", "ctx-u"))
    assert text_of(events) == "broken \\ud800 text" and states(events)[-1] == pb.TASK_STATE_COMPLETED
    task = await a2a.get_task(pb.GetTaskRequest(id=events[0].task.id))
    assert task.artifacts[0].parts[0].text == "broken \\ud800 text"
    async with httpx.AsyncClient(timeout=30) as http:  # the 0.3 stream goes through protobuf too
        card = await A2ACardResolver(http, base_url(client)).get_agent_card()
        transport = CompatJsonRpcTransport(http, card, base_url(client) + "/a2a", is_shared_httpx=True)
        legacy = [kept(e) async for e in transport.send_message_streaming(user_message("Hi", "ctx-u"))]
    assert text_of(legacy) == "broken \\ud800 text"


async def test_return_immediately_answers_before_the_turn_ends(service, llm: ScriptedLLM) -> None:
    gate = asyncio.Event()
    llm.push(Reply(ANSWER, gate=gate, gate_after=2))
    client = await scripted(service, llm)
    body = rpc("SendMessage", {**send_params({"text": "Hi"}, contextId="ctx-i"),
                               "configuration": {"returnImmediately": True}})
    task = (await (await client.post("/a2a", json=body)).json())["result"]["task"]
    assert task["status"]["state"] in ("TASK_STATE_SUBMITTED", "TASK_STATE_WORKING")
    gate.set()
    followed = rpc("GetTask", {"id": task["id"]})
    await eventually_state(client, followed, "TASK_STATE_COMPLETED")


async def eventually_state(client: TestClient, body: dict[str, Any], state: str) -> None:
    async def current() -> str:
        result: str = (await (await client.post("/a2a", json=body)).json())["result"]["status"]["state"]
        return result

    deadline = asyncio.get_running_loop().time() + 10
    while (now := await current()) != state:
        assert asyncio.get_running_loop().time() < deadline, f"still {now}"
        await asyncio.sleep(0.01)
