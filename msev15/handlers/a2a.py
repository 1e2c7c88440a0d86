"""A2A 1.0 JSON-RPC at ``POST /a2a``, over the one turn engine.

``SendMessage`` / ``SendStreamingMessage`` start a turn through
:func:`msev15.handlers.chat.start_turn` (``contextId`` = session, a new context gets a new
session; the task id is the turn id); the stream is :func:`msev15.handlers.streams.relay` with
the A2A translator (handlers/a2a_tasks.py). ``GetTask`` and ``ListTasks`` read the turn log,
``CancelTask`` is the turn cancel (wherever the turn runs), ``SubscribeToTask`` follows the turn
log from now on after a snapshot of the task. The A2A 0.3 method names are aliases: their
params and results are converted with the SDK's 0.3 types (handlers/a2a_legacy.py).

The tenant is the credential's (under AUTH_MODE=none the message metadata's ``tenant_id``,
else ``default``); a task of another tenant is "not found", like one that never existed.
Protocol errors are JSON-RPC errors with A2A's codes, in a 200; what the HTTP layer refuses
before a turn starts (401, 429, 503) keeps its status and the service's envelope.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from dataclasses import dataclass
from typing import Any

from a2a.types import a2a_pb2 as pb
from a2a.utils import errors as a2a_errors
from aiohttp import web
from google.protobuf.json_format import MessageToDict, ParseDict, ParseError

from msev15.agent.coordination import COORDINATION
from msev15.common.ids import new_id
from msev15.config import SETTINGS
from msev15.events.turnlog import TURNS, TurnView
from msev15.handlers import a2a_legacy as legacy
from msev15.handlers.a2a_messages import incoming
from msev15.handlers.a2a_tasks import FINAL_STATES, A2aTranslator, core_encode, task_of
from msev15.handlers.chat import start_turn
from msev15.handlers.errors import ApiError
from msev15.handlers.jsonbody import json_response
from msev15.handlers.pending import apply_decision
from msev15.handlers.protocols import request_tenant
from msev15.handlers.ratelimit import TENANT_COUNTED
from msev15.handlers.roles import caller_role
from msev15.handlers.streams import open_stream, relay
from msev15.handlers.turns import resume_point
from msev15.handlers.validation import check_id, check_message

log = logging.getLogger("api.a2a")

VERSION_HEADER = "A2A-Version"
VERSIONS = ("0.3", "1.0")
CANCEL_WAIT_SECONDS = 5.0
DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE = 50, 100

_REQUESTS: dict[str, type[Any]] = {
    "SendMessage": pb.SendMessageRequest, "SendStreamingMessage": pb.SendMessageRequest,
    "GetTask": pb.GetTaskRequest, "ListTasks": pb.ListTasksRequest, "CancelTask": pb.CancelTaskRequest,
    "SubscribeToTask": pb.SubscribeToTaskRequest,
}
_PUSH = ("CreateTaskPushNotificationConfig", "GetTaskPushNotificationConfig", "ListTaskPushNotificationConfigs",
         "DeleteTaskPushNotificationConfig", "tasks/pushNotificationConfig/set", "tasks/pushNotificationConfig/get",
         "tasks/pushNotificationConfig/list", "tasks/pushNotificationConfig/delete")
_EXTENDED_CARD = ("GetExtendedAgentCard", "agent/getAuthenticatedExtendedCard")


@dataclass
class Call:
    request: web.Request
    rpc_id: str | int | None
    method: str  # the 1.0 name
    legacy: bool  # called by its 0.3 name: 0.3 params and results
    params: Any


def _error(rpc_id: str | int | None, exc: a2a_errors.A2AError, legacy_call: bool = False) -> web.Response:
    code = a2a_errors.JSON_RPC_ERROR_CODE_MAP.get(type(exc), -32603)
    if legacy_call:
        code = legacy.error_code(code)
    error: dict[str, Any] = {"code": code, "message": exc.message}
    if exc.data:
        error["data"] = exc.data
    return json_response({"jsonrpc": "2.0", "id": rpc_id, "error": error})


def _result(call: Call, result: dict[str, Any]) -> web.Response:
    return json_response({"jsonrpc": "2.0", "id": call.rpc_id, "result": result})


def _rpc_id(body: Any) -> str | int | None:
    """The request's id to answer with (None when it has none that JSON-RPC allows)."""
    rpc_id = body.get("id") if isinstance(body, dict) else None
    return None if isinstance(rpc_id, bool) or not isinstance(rpc_id, str | int) else rpc_id


def _envelope(body: Any) -> tuple[str, dict[str, Any]]:
    if not isinstance(body, dict):
        raise a2a_errors.InvalidRequestError("a JSON-RPC request must be an object (batches are not supported)")
    rpc_id = body.get("id")
    if isinstance(rpc_id, bool) or not isinstance(rpc_id, str | int | None):
        raise a2a_errors.InvalidRequestError("id must be a string, an integer or null")
    if body.get("jsonrpc") != "2.0":
        raise a2a_errors.InvalidRequestError("jsonrpc must be exactly '2.0'")
    method = body.get("method")
    if not isinstance(method, str) or not method:
        raise a2a_errors.InvalidRequestError("method is required")
    params = body.get("params", {})
    if not isinstance(params, dict):
        raise a2a_errors.InvalidParamsError("params must be an object")
    return method, params


def _parse(method: str, params: dict[str, Any], body: dict[str, Any]) -> tuple[str, bool, Any]:
    """(1.0 method name, called by its 0.3 name, the request as the 1.0 proto)."""
    if method in _PUSH:
        raise a2a_errors.PushNotificationNotSupportedError()
    if method in _EXTENDED_CARD:
        raise a2a_errors.UnsupportedOperationError("this agent has no extended agent card")
    if method in legacy.ALIASES:
        name = legacy.ALIASES[method]
        return name, True, legacy.core_request(name, method, body)
    kind = _REQUESTS.get(method)
    if kind is None:
        raise a2a_errors.MethodNotFoundError(f"no method {method!r}")
    try:
        return method, False, ParseDict(params, kind(), ignore_unknown_fields=True)
    except ParseError as exc:
        raise a2a_errors.InvalidParamsError(str(exc)) from None


def _check_version(request: web.Request) -> None:
    version = request.headers.get(VERSION_HEADER, "").strip()
    if version and ".".join(version.split(".")[:2]) not in VERSIONS:
        raise a2a_errors.VersionNotSupportedError(f"A2A-Version {version[:16]!r}: this agent speaks 1.0 and 0.3")


async def handle(request: web.Request) -> web.StreamResponse:
    """The JSON-RPC call (documented on :func:`msev15.handlers.a2a_routes.rpc`)."""
    rpc_id: str | int | None = None
    legacy_call = False
    try:
        try:
            body = json.loads(await request.read())
        except (ValueError, UnicodeDecodeError) as exc:
            raise a2a_errors.JSONParseError(f"the body is not JSON ({type(exc).__name__})") from None
        rpc_id = _rpc_id(body)
        method, params = _envelope(body)
        legacy_call = method in legacy.ALIASES
        _check_version(request)
        name, legacy_call, parsed = _parse(method, params, body)
        return await _METHODS[name](Call(request, rpc_id, name, legacy_call, parsed))
    except a2a_errors.A2AError as exc:
        return _error(rpc_id, exc, legacy_call)
    except ApiError as exc:
        if exc.status not in (400, 403, 404):  # 401, 409, 429, 503: the HTTP answer, with its headers
            raise
        return _error(rpc_id, a2a_errors.InvalidParamsError(exc.message, {"error": exc.error}), legacy_call)


def _tenant(call: Call, metadata: Any = None) -> str:
    """The caller's tenant: the credential's; under AUTH_MODE=none the ``X-Tenant-ID`` header, the
    message metadata's ``tenant_id`` or the request's ``tenant`` field, else ``default``."""
    claimed = getattr(call.params, "tenant", "") or None
    if metadata is not None and "tenant_id" in metadata:
        claimed = metadata["tenant_id"]
    return request_tenant(call.request, claimed)


async def _task(call: Call, task_id: str, tenant_id: str | None = None) -> TurnView:
    if not task_id:
        raise a2a_errors.InvalidParamsError("id (the task id) is required")
    record = await call.request.app[TURNS].find_task(tenant_id or _tenant(call), task_id)
    if record is None:
        raise a2a_errors.TaskNotFoundError(f"no task {task_id[:128]!r} (or its events are no longer kept)")
    await record.catch_up()  # a task is built from its events: all of them, wherever it runs
    return record


def _task_json(call: Call, task: pb.Task) -> dict[str, Any]:
    return legacy.task_json(task) if call.legacy else MessageToDict(task)


async def _send(call: Call, stream: bool) -> web.StreamResponse:
    req: pb.SendMessageRequest = call.params
    if not req.HasField("message"):
        raise a2a_errors.InvalidParamsError("message is required")
    message = req.message
    metadata = MessageToDict(message.metadata) or MessageToDict(req.metadata)
    tenant_id = _tenant(call, metadata)
    wanted = incoming(message)
    if message.task_id:
        waited = await _task(call, message.task_id, tenant_id)
        if task_of(waited, include_artifacts=False).status.state != pb.TASK_STATE_INPUT_REQUIRED:
            raise a2a_errors.UnsupportedOperationError(
                "this task is not waiting for input: send a new message in its context, without taskId")
        if not wanted.answers:
            raise a2a_errors.InvalidParamsError("a task in INPUT_REQUIRED takes a data part with decisions or "
                                                "outputs; a new question is a new message without taskId")
        return await _answer(call, waited, wanted, tenant_id, stream, req)
    if wanted.answers:
        raise a2a_errors.UnsupportedOperationError("decisions and outputs answer a task in INPUT_REQUIRED: "
                                                   "name it with taskId")
    session_id = check_id(message.context_id, "contextId") if message.context_id else new_id()
    text = check_message(wanted.text, call.request.app[SETTINGS].max_message_chars, "message.parts")
    record = await start_turn(call.request.app, tenant_id, session_id, text, stream=stream,
                              counted=call.request.get(TENANT_COUNTED, False))
    return await _sent(call, record, stream, req)


async def _answer(call: Call, waited: TurnView, wanted: Any, tenant_id: str, stream: bool,
                  req: pb.SendMessageRequest) -> web.StreamResponse:
    """Decide the waiting calls of ``waited`` (the same decisions the REST pending routes take);
    the step's last decision starts the continuation turn, answered as its own task (same
    context). Fewer answers than calls leave the task in INPUT_REQUIRED."""
    app = call.request.app
    answers = ([(d["call_id"], {k: v for k, v in d.items() if k != "call_id"}) for d in wanted.decisions]
               + [(o["call_id"], {"output": o["output"]}) for o in wanted.outputs])
    continuation = None
    for call_id, body in answers:
        try:
            _, record = await apply_decision(app, tenant_id, waited.session_id, call_id, body, stream=stream,
                                             role=caller_role(call.request),
                                             counted=call.request.get(TENANT_COUNTED, False))
        except ApiError as exc:  # pending_not_found, already_decided, a body that does not fit the call
            raise a2a_errors.InvalidParamsError(f"{call_id[:128]}: {exc.message}", {"error": exc.error}) from None
        continuation = record or continuation
    if continuation is None:
        return _sent_task(call, task_of(waited))
    return await _sent(call, continuation, stream, req)


async def _sent(call: Call, record: TurnView, stream: bool, req: pb.SendMessageRequest) -> web.StreamResponse:
    """SendMessage's answer for the turn it started: its stream, or its task (once it ended,
    unless the request said ``returnImmediately``)."""
    if stream:
        return await _stream(call, record, 0, snapshot=True)
    if not req.configuration.return_immediately:
        await record.outcome()
    return _sent_task(call, task_of(record))


def _sent_task(call: Call, task: pb.Task) -> web.Response:
    if call.legacy:
        return _result(call, legacy.task_json(task))
    return _result(call, MessageToDict(pb.SendMessageResponse(task=task)))


async def _stream(call: Call, record: TurnView, after: int, snapshot: bool) -> web.StreamResponse:
    encode = legacy.stream_json if call.legacy else core_encode
    translator = A2aTranslator(record, call.rpc_id, after, encode, snapshot)
    async with open_stream(call.request, record, sep="\n") as resp:
        try:
            await resp.send_frames(translator.opening())
        except (ConnectionResetError, TimeoutError):
            return resp  # gone before the first frame; the turn goes on
        await relay(record, resp, translator, after)
    return resp


async def send_message(call: Call) -> web.StreamResponse:
    return await _send(call, stream=False)


async def send_streaming_message(call: Call) -> web.StreamResponse:
    return await _send(call, stream=True)


async def get_task(call: Call) -> web.StreamResponse:
    return _result(call, _task_json(call, task_of(await _task(call, call.params.id))))


async def list_tasks(call: Call) -> web.StreamResponse:
    req: pb.ListTasksRequest = call.params
    size = req.page_size if req.HasField("page_size") else DEFAULT_PAGE_SIZE
    if not 1 <= size <= MAX_PAGE_SIZE:
        raise a2a_errors.InvalidParamsError(f"pageSize must be between 1 and {MAX_PAGE_SIZE}")
    token = req.page_token or "0"
    if not token.isdigit() or len(token) > 9:
        raise a2a_errors.InvalidParamsError("pageToken must be a token from a previous ListTasks answer")
    start = int(token)
    # Newest first; with a shared log, the turns of every instance (a listed view holds the event
    # that ended it, enough for its status; the page's answers are read only when asked for).
    views = await call.request.app[TURNS].tasks(_tenant(call))
    if req.context_id:
        views = [v for v in views if v.session_id == req.context_id]
    if req.status:
        views = [v for v in views if task_of(v, include_artifacts=False).status.state == req.status]
    chosen = views[start:start + size]
    if req.include_artifacts:
        for view in chosen:
            await view.catch_up()
    page = [task_of(v, include_artifacts=req.include_artifacts) for v in chosen]
    more = start + size < len(views)
    result = MessageToDict(pb.ListTasksResponse(tasks=page, next_page_token=str(start + size) if more else "",
                                                page_size=size, total_size=len(views)),
                           always_print_fields_with_no_presence=True)
    if call.legacy:
        result["tasks"] = [legacy.task_json(t) for t in page]
    return _result(call, result)


async def cancel_task(call: Call) -> web.StreamResponse:
    record = await _task(call, call.params.id)
    if task_of(record, include_artifacts=False).status.state in FINAL_STATES or record.finished:
        raise a2a_errors.TaskNotCancelableError(f"the task has already ended ({record.status})")
    if not await call.request.app[COORDINATION].cancel(record, "cancelled"):
        raise a2a_errors.TaskNotCancelableError(f"the task has already ended ({record.status})")
    with contextlib.suppress(TimeoutError):  # its end normally follows at once; else it is still cancelling
        async with asyncio.timeout(CANCEL_WAIT_SECONDS):
            await record.outcome()
    return _result(call, _task_json(call, task_of(record)))


async def subscribe_to_task(call: Call) -> web.StreamResponse:
    record = await _task(call, call.params.id)
    if record.finished:
        raise a2a_errors.UnsupportedOperationError(
            f"the task has ended ({record.status}): read it with GetTask")
    after = resume_point(call.request, record.turn_id)  # Last-Event-ID: resume without a snapshot
    if after:
        return await _stream(call, record, after, snapshot=False)
    return await _stream(call, record, len(record.events), snapshot=True)


_METHODS = {
    "SendMessage": send_message, "SendStreamingMessage": send_streaming_message, "GetTask": get_task,
    "ListTasks": list_tasks, "CancelTask": cancel_task, "SubscribeToTask": subscribe_to_task,
}
