"""The tool registry: what the model may call, with schemas checked before every call.

A tool is a name, a description written for the model, a JSON schema for its arguments and an
async implementation. The implementation receives a :class:`ToolContext` built from the turn
(tenant, session, request id) — never from the model — and the validated arguments.

Implementations signal an error the model should see (and can recover from) by raising
:class:`ToolError`; anything else they raise is reported to the model as an internal error
and logged with its traceback.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import jsonschema

log = logging.getLogger("agent.tools")


@dataclass(frozen=True, slots=True)
class ToolContext:
    """Who a tool call runs for. Comes from the turn, never from model output."""

    tenant_id: str
    session_id: str
    request_id: str = "-"
    # A caller-chosen idempotency key for an MCP call (its retries, even from another instance,
    # act once on servers that honour it); None: each call gets a fresh one.
    idempotency_key: str | None = None


class ToolError(Exception):
    """An error the model should read and may recover from (bad input, not found, ...)."""


class ServiceUnavailable(Exception):
    """A dependency of the service itself failed (the order store refuses writes): the call
    gets a result like any failure, and the turn then ends with a 503 ``code`` for the client."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


ToolFunc = Callable[[ToolContext, dict[str, Any]], Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class Tool:
    name: str
    description: str
    parameters: Mapping[str, Any]
    func: ToolFunc = field(repr=False, compare=False)
    source: str = "local"  # "local" or the MCP server's name
    # What the tool does (see :mod:`msev15.mcpkit.capabilities`): how rules without a model find it.
    capability: str | None = None

    def openai_schema(self) -> dict[str, Any]:
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": dict(self.parameters),
            },
        }


@dataclass(frozen=True, slots=True)
class ToolResult:
    ok: bool
    content: str  # JSON text sent back to the model
    unavailable: ServiceUnavailable | None = None

    @classmethod
    def success(cls, value: Any) -> ToolResult:
        return cls(True, value if isinstance(value, str) else json.dumps(value, default=str))

    @classmethod
    def failure(cls, message: str) -> ToolResult:
        return cls(False, json.dumps({"error": message}))


def _validator(schema: Mapping[str, Any]) -> jsonschema.protocols.Validator:
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    return cls(schema)


def _schema_error(err: jsonschema.ValidationError) -> str:
    where = ".".join(str(p) for p in err.absolute_path)
    return f"invalid arguments: {where + ': ' if where else ''}{err.message}"


class ToolRegistry:
    """Local tools plus tool sources that change at run time (MCP servers).

    ``sources`` are callables returning the current tools of a dynamic source, so the agent
    always sees what an MCP server offers right now.
    """

    def __init__(self, timeout: float = 30.0) -> None:
        self.timeout = timeout
        self._local: dict[str, Tool] = {}
        self._validators: dict[str, tuple[Tool, jsonschema.protocols.Validator]] = {}
        self._sources: list[Callable[[], Iterable[Tool]]] = []
        self._schema_cache: tuple[tuple[Tool, ...], list[dict[str, Any]]] = ((), [])

    def add(self, tool: Tool) -> None:
        if tool.name in self._local:
            raise ValueError(f"duplicate tool name {tool.name!r}")
        self._local[tool.name] = tool
        self._schema_cache = ((), [])

    def add_many(self, tools: Iterable[Tool]) -> None:
        for tool in tools:
            self.add(tool)

    def add_source(self, source: Callable[[], Iterable[Tool]]) -> None:
        self._sources.append(source)

    def local_tools(self) -> list[Tool]:
        """The tools added here (built-in), without those of the dynamic sources."""
        return list(self._local.values())

    @property
    def local_names(self) -> frozenset[str]:
        return frozenset(self._local)

    def tools(self) -> dict[str, Tool]:
        """Every tool available now, by name."""
        found = dict(self._local)
        for source in self._sources:
            for tool in source():
                found.setdefault(tool.name, tool)
        return found

    def schemas(self) -> list[dict[str, Any]]:
        """The tools in the Chat Completions ``tools`` shape; rebuilt only when the set changes."""
        if not self._sources and self._schema_cache[0]:
            return self._schema_cache[1]  # local tools only: fixed once the app has started
        tools = tuple(self.tools().values())
        cached, schemas = self._schema_cache
        # Identity, not equality: holding the tools keeps their ids from being reused.
        if len(cached) != len(tools) or any(a is not b for a, b in zip(cached, tools, strict=True)):
            schemas = [t.openai_schema() for t in tools]
            self._schema_cache = (tools, schemas)
        return schemas

    def capabilities(self) -> dict[str, str]:
        """The tag of every tool available now that has one, by tool name."""
        return {name: tool.capability for name, tool in self.tools().items() if tool.capability}

    def __len__(self) -> int:
        return len(self.tools())

    def _validate(self, tool: Tool, args: dict[str, Any]) -> str | None:
        # One entry per tool name, rebuilt when an MCP refresh replaces the tool: bounded by the
        # number of names, however often a server's tool list changes.
        entry = self._validators.get(tool.name)
        if entry is None or entry[0] is not tool:
            entry = self._validators[tool.name] = (tool, _validator(tool.parameters))
        validator = entry[1]
        error = jsonschema.exceptions.best_match(validator.iter_errors(args))
        return None if error is None else _schema_error(error)

    async def call(self, name: str, raw_arguments: str | Mapping[str, Any], ctx: ToolContext) -> ToolResult:
        """Run one tool call. Never raises (except cancellation): failures become results."""
        tool = self.tools().get(name)
        if tool is None:
            return ToolResult.failure(f"unknown tool {name!r}")
        if isinstance(raw_arguments, Mapping):
            args = dict(raw_arguments)
        else:
            try:
                args = json.loads(raw_arguments or "{}")
            except ValueError as exc:
                return ToolResult.failure(f"arguments are not valid JSON: {exc}")
        if not isinstance(args, dict):
            return ToolResult.failure("arguments must be a JSON object")
        problem = self._validate(tool, args)
        if problem:
            return ToolResult.failure(problem)
        try:
            async with asyncio.timeout(self.timeout):  # in this task: wait_for would start one per call
                value = await tool.func(ctx, args)
        except ToolError as exc:
            return ToolResult.failure(str(exc))
        except ServiceUnavailable as exc:
            return ToolResult(False, json.dumps({"error": f"{exc.code}: {exc.message}"}), exc)
        except TimeoutError:
            log.warning("tool %s timed out after %.1fs", name, self.timeout)
            return ToolResult.failure(f"tool {name} timed out after {self.timeout:g}s")
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("tool %s failed", name)
            return ToolResult.failure(f"tool {name} failed with an internal error")
        return ToolResult.success(value)
