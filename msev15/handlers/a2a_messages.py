"""What an A2A message asks for: a user message (its text parts), or the answer to a task that
waits (INPUT_REQUIRED), given as a data part ``{"decisions": [{"call_id", "approve", "reason"?}]}``
(approvals) or ``{"outputs": [{"call_id", "output"}]}`` (client-side tools).

Both shapes are checked here, whatever the deployment can do with them, so a client learns
about a malformed answer (InvalidParams) separately from an unsupported one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from a2a.types import a2a_pb2 as pb
from a2a.utils.errors import ContentTypeNotSupportedError, InvalidParamsError
from google.protobuf.json_format import MessageToDict

MAX_ANSWERS = 64


@dataclass(frozen=True)
class Incoming:
    text: str
    decisions: list[dict[str, Any]] = field(default_factory=list)
    outputs: list[dict[str, Any]] = field(default_factory=list)

    @property
    def answers(self) -> bool:
        return bool(self.decisions or self.outputs)


def _call_id(item: Any, where: str) -> dict[str, Any]:
    if not isinstance(item, dict):
        raise InvalidParamsError(f"{where} must be an object")
    call_id = item.get("call_id")
    if not isinstance(call_id, str) or not call_id or len(call_id) > 128:
        raise InvalidParamsError(f"{where}.call_id must be a non-empty string of at most 128 characters")
    return item


def _decisions(raw: Any) -> list[dict[str, Any]]:
    if not isinstance(raw, list) or not raw or len(raw) > MAX_ANSWERS:
        raise InvalidParamsError(f"decisions must be a list of 1 to {MAX_ANSWERS} objects")
    out = []
    for i, item in enumerate(raw):
        item = _call_id(item, f"decisions[{i}]")
        if not isinstance(item.get("approve"), bool):
            raise InvalidParamsError(f"decisions[{i}].approve must be true or false")
        reason = item.get("reason")
        if reason is not None and (not isinstance(reason, str) or len(reason) > 2000):
            raise InvalidParamsError(f"decisions[{i}].reason must be a string of at most 2000 characters")
        unknown = set(item) - {"call_id", "approve", "reason"}
        if unknown:
            raise InvalidParamsError(f"decisions[{i}] has unknown fields: {', '.join(sorted(unknown))}")
        out.append({"call_id": item["call_id"], "approve": item["approve"], "reason": reason})
    return out


def _outputs(raw: Any) -> list[dict[str, Any]]:
    if not isinstance(raw, list) or not raw or len(raw) > MAX_ANSWERS:
        raise InvalidParamsError(f"outputs must be a list of 1 to {MAX_ANSWERS} objects")
    out = []
    for i, item in enumerate(raw):
        item = _call_id(item, f"outputs[{i}]")
        if "output" not in item:
            raise InvalidParamsError(f"outputs[{i}].output is required")
        out.append({"call_id": item["call_id"], "output": item["output"]})
    return out


def incoming(message: pb.Message) -> Incoming:
    """The message's text parts joined, and any decisions or outputs in its data parts."""
    if message.role == pb.ROLE_AGENT:
        raise InvalidParamsError("message.role must be ROLE_USER")
    texts: list[str] = []
    decisions: list[dict[str, Any]] = []
    outputs: list[dict[str, Any]] = []
    for part in message.parts:
        kind = part.WhichOneof("content")
        if kind == "text":
            texts.append(part.text)
        elif kind == "data":
            data = MessageToDict(part.data)
            if not isinstance(data, dict) or not ({"decisions", "outputs"} & set(data)):
                raise InvalidParamsError('a data part must be {"decisions": [...]} or {"outputs": [...]}')
            if "decisions" in data:
                decisions += _decisions(data["decisions"])
            if "outputs" in data:
                outputs += _outputs(data["outputs"])
        else:
            raise ContentTypeNotSupportedError("only text parts and data parts (decisions, outputs) are read")
    return Incoming("\n".join(texts), decisions, outputs)
