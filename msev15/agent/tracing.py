"""GenAI spans of a turn (OpenTelemetry semantic conventions, latest experimental names).

Installed on the runner only when tracing is on (``instrument``), so a service without an OTLP
endpoint runs none of this and the hot path has no tracing call in it:

- ``invoke_agent CustomerServiceAgent`` (INTERNAL) around each turn's run. Its parent is the
  context current when the turn was accepted (the request's HTTP server span), captured by a bus
  handler on ``TurnRequested``. It is current while the turn runs, so everything below joins it.
- ``chat {model}`` (CLIENT) around each model request, with usage, finish reasons and the time to
  the first chunk; the request to the model endpoint carries its ``traceparent``.
- ``execute_tool {name}`` (INTERNAL) from the turn's ``ToolCalled`` to its ``ToolFinished`` (bus
  handlers: both are published synchronously where the call starts and ends).
- ``tools/call {tool}`` (CLIENT) around each MCP call (agent/mcp_client.py asks :class:`McpSpans`),
  with the ``traceparent`` in the request's ``_meta`` where the MCP servers read it.

A continuation turn (its waiting calls were decided) links to the turn it continues, and the
first turn the agent runs after a handoff (released by the operator, or back after the timeout's
ticket) links to the turn that handed off (``msev15.link`` ``continues`` / ``handoff``), when this
instance ran that turn recently.

Failures set status ERROR and ``error.type``. Message text, tool arguments and results are added
only with ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true``.
"""

from __future__ import annotations

import json
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

from aiohttp import web
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from msev15.agent.context import MCP, MCP_POOL, RUNNER
from msev15.agent.execution import TurnExecution
from msev15.agent.loop import TurnProgress
from msev15.agent.providers.base import LLMError, ModelChoice, ModelReply, ProbeStatus, Provider
from msev15.agent.providers.openai_compat import OpenAIProvider
from msev15.agent.runner import AgentRunner
from msev15.common.telemetry import inject
from msev15.events.tracing import TRACING, Tracing
from msev15.events.turnlog import TurnRecord
from msev15.events.types import ToolCalled, ToolFinished, TurnCompleted, TurnFailed, TurnRequested

AGENT_NAME = "CustomerServiceAgent"
HANDOFFS_KEPT = 10_000  # sessions with a person whose handing-off turn this instance remembers
PROVIDER_NAMES = {"openai": "openai", "azure": "azure.ai.openai", "offline": "msev15.offline"}


def _fail(span: Span, error_type: str, description: str | None = None) -> None:
    span.set_status(Status(StatusCode.ERROR, description))
    span.set_attribute("error.type", error_type)


class TurnSpans:
    """The spans of the turns in flight, by turn id, and the bus handlers that fill and end them."""

    def __init__(self, tracing: Tracing) -> None:
        self.tracer = tracing.tracer
        self.capture = tracing.capture_content
        self.logs = tracing.log_filter
        self.parents: dict[str, otel_context.Context] = {}  # accepted, not started yet
        self.agents: dict[str, Span] = {}  # running: the invoke_agent span
        self.tools: dict[tuple[str, str], Span] = {}  # by turn id and call id
        # Running turns' progress, kept only when content is captured: a finished call's result
        # is in its round's ``pending`` results when its ToolFinished is published.
        self.progress: dict[str, TurnProgress] = {}
        # The turn that handed each session to a person: the agent's next turn there links to it.
        self.handed_off: OrderedDict[tuple[str, str], trace.SpanContext] = OrderedDict()

    def accepted(self, turn: TurnRequested) -> None:
        self.parents[turn.turn_id] = otel_context.get_current()
        self.logs.remember(turn.turn_id, trace.get_current_span().get_span_context())

    def tool_called(self, event: ToolCalled) -> None:
        agent = self.agents.get(event.turn_id)
        if agent is None:
            return
        span = self.tracer.start_span(f"execute_tool {event.name}", trace.set_span_in_context(agent),
                                      kind=SpanKind.INTERNAL,
                                      attributes={"gen_ai.operation.name": "execute_tool",
                                                  "gen_ai.tool.name": event.name,
                                                  "gen_ai.tool.call.id": event.call_id,
                                                  "gen_ai.tool.type": "function"})
        if self.capture:
            span.set_attribute("gen_ai.tool.call.arguments", json.dumps(event.arguments, default=str))
        self.tools[event.turn_id, event.call_id] = span

    def tool_finished(self, event: ToolFinished) -> None:
        span = self.tools.pop((event.turn_id, event.call_id), None)
        if span is None:
            return
        if self.capture:
            progress = self.progress.get(event.turn_id)
            pending = progress.pending if progress is not None else None
            result = pending[1].get(event.call_id) if pending is not None else None
            if result is not None:
                span.set_attribute("gen_ai.tool.call.result", result.content)
        if not event.ok:
            _fail(span, "tool_error", event.error if self.capture else None)
        span.end()

    def completed(self, event: TurnCompleted) -> None:
        self.parents.pop(event.turn_id, None)
        span = self.agents.get(event.turn_id)
        if span is not None and event.status == "with_human":
            self.handed_off[event.tenant_id, event.session_id] = span.get_span_context()
            if len(self.handed_off) > HANDOFFS_KEPT:
                self.handed_off.popitem(last=False)
        if span is not None and event.usage:
            span.set_attribute("gen_ai.usage.input_tokens", event.usage.get("prompt_tokens", 0))
            span.set_attribute("gen_ai.usage.output_tokens", event.usage.get("completion_tokens", 0))

    def failed(self, event: TurnFailed) -> None:
        self.parents.pop(event.turn_id, None)  # a turn stopped while queued never runs
        span = self.agents.get(event.turn_id)
        if span is not None:
            _fail(span, event.error, event.message)


class TracedExecution(TurnExecution):
    """The runner's execution, each turn's run inside its ``invoke_agent`` span."""

    def __init__(self, inner: TurnExecution, spans: TurnSpans) -> None:
        # A copy of the runner's execution (its settings and parts), not a second one built anew.
        self.__dict__.update(inner.__dict__)
        self.spans = spans

    async def run(self, turn: TurnRequested, record: TurnRecord, progress: TurnProgress) -> None:
        spans = self.spans
        parent = spans.parents.pop(turn.turn_id, None)
        # A continuation (its waiting calls were decided) links to the turn it continues, when
        # this instance ran that one recently (the paused turn's span context is not stored).
        paused = spans.logs.turns.get(turn.resumes) if turn.resumes else None
        links = [trace.Link(paused, {"msev15.link": "continues"})] if paused is not None and paused.is_valid else None
        if turn.resumes is None and spans.handed_off:  # the agent's first turn after a handoff
            handed_off = spans.handed_off.pop((turn.tenant_id, turn.session_id), None)
            if handed_off is not None and handed_off.is_valid:
                links = [trace.Link(handed_off, {"msev15.link": "handoff"})]
        with spans.tracer.start_as_current_span(
                f"invoke_agent {AGENT_NAME}", parent, kind=SpanKind.INTERNAL, record_exception=False, links=links,
                attributes={"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": AGENT_NAME,
                            "gen_ai.conversation.id": turn.session_id, "msev15.tenant_id": turn.tenant_id,
                            "msev15.turn_id": turn.turn_id}) as span:
            if spans.capture:
                span.set_attribute("gen_ai.input.messages", json.dumps([{"role": "user", "content": turn.message}]))
            spans.agents[turn.turn_id] = span
            if spans.capture:
                spans.progress[turn.turn_id] = progress
            spans.logs.remember(turn.turn_id, span.get_span_context())
            try:
                await super().run(turn, record, progress)
            finally:
                span.set_attribute("msev15.profile_version", record.profile_version or 0)
                del spans.agents[turn.turn_id]
                spans.progress.pop(turn.turn_id, None)
                for key in [k for k in spans.tools if k[0] == turn.turn_id]:
                    spans.tools.pop(key).end()  # a cut turn's tools never finished


class TracedProvider:
    """A provider whose every request is a ``chat {model}`` span, current while it is sent."""

    def __init__(self, inner: Provider, spans: TurnSpans) -> None:
        self.inner = inner
        self.name = inner.name
        self.model = inner.model
        self.spans = spans
        if isinstance(inner, OpenAIProvider):  # traceparent on each request to the model endpoint
            inner.request_headers = _traceparent

    async def stream(self, messages: list[dict[str, Any]],
                     tools: list[dict[str, Any]]) -> AsyncIterator[str | ModelReply]:
        spans = self.spans
        span = spans.tracer.start_span(
            f"chat {self.model}", kind=SpanKind.CLIENT,
            attributes={"gen_ai.operation.name": "chat",
                        "gen_ai.provider.name": PROVIDER_NAMES.get(self.name, self.name),
                        "gen_ai.request.model": self.model})
        if spans.capture:
            span.set_attribute("gen_ai.input.messages", json.dumps(messages, default=str))
        token = otel_context.attach(trace.set_span_in_context(span))
        started = time.monotonic()
        first = True
        try:
            async for item in self.inner.stream(messages, tools):
                if first:
                    first = False
                    span.set_attribute("gen_ai.response.time_to_first_chunk", time.monotonic() - started)
                if isinstance(item, ModelReply):
                    _reply(span, item, self.model, spans.capture)
                yield item
        except LLMError as exc:
            _fail(span, exc.code, exc.message)
            raise
        except BaseException as exc:
            _fail(span, type(exc).__qualname__)
            raise
        finally:
            otel_context.detach(token)
            span.end()

    def with_model(self, choice: ModelChoice) -> TracedProvider:
        """The inner provider's variant for a tenant's model (agent profiles), traced the same way."""
        pick = getattr(self.inner, "with_model", None)
        if pick is None:
            return self
        variants: dict[ModelChoice, TracedProvider] = self.__dict__.setdefault("_variants", {})
        found = variants.get(choice)
        if found is None:
            if len(variants) >= 256:
                variants.clear()
            found = variants[choice] = TracedProvider(pick(choice), self.spans)
        return found

    async def probe(self) -> ProbeStatus:
        return await self.inner.probe()

    async def close(self) -> None:
        await self.inner.close()


def _reply(span: Span, reply: ModelReply, model: str, capture: bool) -> None:
    span.set_attribute("gen_ai.response.model", reply.model or model)
    span.set_attribute("gen_ai.response.finish_reasons",
                       [reply.finish_reason or ("tool_calls" if reply.tool_calls else "stop")])
    if reply.usage:
        span.set_attribute("gen_ai.usage.input_tokens", reply.usage.get("prompt_tokens", 0))
        span.set_attribute("gen_ai.usage.output_tokens", reply.usage.get("completion_tokens", 0))
    if capture:
        span.set_attribute("gen_ai.output.messages", json.dumps([{"role": "assistant", "content": reply.text}]))


def _traceparent() -> dict[str, str]:
    headers: dict[str, str] = {}
    inject(headers)
    return headers


class McpSpans:
    """``tools/call {tool}`` CLIENT spans for the MCP client (one per attempt-set of a call)."""

    def __init__(self, tracing: Tracing) -> None:
        self.tracer = tracing.tracer
        self.capture = tracing.capture_content

    @contextmanager
    def call(self, server: str, url: str, tool: str, meta: dict[str, Any]) -> Iterator[Span]:
        """The span of one call; writes its ``traceparent`` into ``meta`` (the request's ``_meta``)."""
        with self.tracer.start_as_current_span(
                f"tools/call {tool}", kind=SpanKind.CLIENT, record_exception=False, set_status_on_exception=False,
                attributes={"mcp.method.name": "tools/call", "gen_ai.tool.name": tool,
                            "gen_ai.operation.name": "execute_tool", "msev15.mcp.server": server,
                            "server.address": url}) as span:
            # The mcp SDK (2.x, SEP-414) writes the same into _meta itself; ours does not rely on it.
            inject(meta)
            try:
                yield span
            except BaseException as exc:
                _fail(span, type(exc).__qualname__, str(exc) if self.capture else None)
                raise


def instrument(runner: AgentRunner, tracing: Tracing) -> TurnSpans:
    """Put the turn's spans on ``runner``: its execution, its provider, and bus handlers for the
    turn's tool and terminal events (registered after the runner's own, so a refused turn never
    gets here)."""
    spans = TurnSpans(tracing)
    execution = TracedExecution(runner.execution, spans)
    execution.provider = TracedProvider(runner.execution.provider, spans)
    runner.execution = execution
    bus = runner.bus
    bus.on(TurnRequested, spans.accepted)
    bus.on(ToolCalled, spans.tool_called)
    bus.on(ToolFinished, spans.tool_finished)
    bus.on(TurnCompleted, spans.completed)
    bus.on(TurnFailed, spans.failed)
    return spans


async def agent_tracing_ctx(app: web.Application) -> AsyncIterator[None]:
    """After the runner and the MCP connections exist, before any request: their spans."""
    tracing = app[TRACING]
    instrument(app[RUNNER], tracing)
    mcp_spans = McpSpans(tracing)
    for connection in app[MCP].values():
        connection.spans = mcp_spans
    app[MCP_POOL].spans = mcp_spans
    yield
