"""The A2A 0.3 method names, accepted as aliases at ``POST /a2a`` (many clients still send them).

A 0.3 call's params are read with the SDK's 0.3 types and converted to the 1.0 request; its
results go back as 0.3 objects (``kind`` fields, lower-case states) through the SDK's
conversions, so both versions run the same method code. ``tasks/list`` has no 0.3 type: it
takes and answers the 1.0 shape.
"""

from __future__ import annotations

from typing import Any

from a2a.compat.v0_3 import conversions
from a2a.compat.v0_3 import types as v03
from a2a.types import a2a_pb2 as pb
from a2a.utils.errors import InvalidParamsError
from google.protobuf.json_format import ParseDict, ParseError
from pydantic import ValidationError

ALIASES = {
    "message/send": "SendMessage", "message/stream": "SendStreamingMessage", "tasks/get": "GetTask",
    "tasks/list": "ListTasks", "tasks/cancel": "CancelTask", "tasks/resubscribe": "SubscribeToTask",
}
# Error codes a 0.3 client knows (-32009 VersionNotSupported came with 1.0).
_V03_CODES = frozenset((-32700, -32600, -32601, -32602, -32603, -32001, -32002, -32003, -32004, -32005, -32006,
                        -32007))


def core_request(name: str, method: str, body: dict[str, Any]) -> Any:
    """The 1.0 request of a 0.3 call."""
    try:
        if name in ("SendMessage", "SendStreamingMessage"):
            kind = v03.SendMessageRequest if name == "SendMessage" else v03.SendStreamingMessageRequest
            send = kind.model_validate(body)
            return conversions.to_core_send_message_request(send)  # type: ignore[arg-type]
        if name == "GetTask":
            return conversions.to_core_get_task_request(v03.GetTaskRequest.model_validate(body))
        if name == "CancelTask":
            return conversions.to_core_cancel_task_request(v03.CancelTaskRequest.model_validate(body))
        if name == "SubscribeToTask":
            return conversions.to_core_subscribe_to_task_request(v03.TaskResubscriptionRequest.model_validate(body))
        return ParseDict(body.get("params", {}), pb.ListTasksRequest(), ignore_unknown_fields=True)
    except (ValidationError, ParseError, ValueError) as exc:
        raise InvalidParamsError(f"{method}: {str(exc).splitlines()[0]}") from None


def _dump(model: Any) -> dict[str, Any]:
    dumped: dict[str, Any] = model.model_dump(mode="json", by_alias=True, exclude_none=True)
    return dumped


def task_json(task: pb.Task) -> dict[str, Any]:
    return _dump(conversions.to_compat_task(task))


def stream_json(response: pb.StreamResponse) -> dict[str, Any]:
    result: dict[str, Any] = _dump(conversions.to_compat_stream_response(response))["result"]
    return result


def error_code(code: int) -> int:
    return code if code in _V03_CODES else -32603
