"""Azure OpenAI and OpenAI-compatible endpoints through the ``openai`` package, on a lean path.

The openai client still sends every request: its auth (API key, Azure ``api-key``, Entra ID
tokens), retries of 408/409/429/5xx (``LLM_MAX_RETRIES``), timeouts and typed errors all apply.
What it no longer does per request is the costly part: the body goes as ready JSON bytes
(``chat_api``/``responses_api``, tool schemas serialized once), and the streamed answer is read
as raw SSE bytes (``sse``) instead of one typed object per chunk.
"""

from __future__ import annotations

import asyncio
import copy
import email.utils
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any, cast
from urllib.parse import urlsplit

import httpx2
import openai

from msev15.agent.providers.base import LLMError, ModelChoice, ModelReply, ProbeStatus
from msev15.agent.providers.chat_api import ChatCompletions
from msev15.agent.providers.clients import ModelClient, build_client
from msev15.agent.providers.diagnosis import Setup, endpoint_said, joined, status_hint, unreachable_hint
from msev15.agent.providers.responses_api import Responses
from msev15.agent.providers.sse import sse_events
from msev15.config import Settings

log = logging.getLogger("agent.llm")

# Which auth the SDK applies (the generated methods pass the same); the body is JSON bytes.
MAX_VARIANTS = 256  # tenants' model choices kept built (each a wire over the same client)
_OPTIONS: Any = {"headers": {"Content-Type": "application/json", "Accept": "text/event-stream"},
                 "security": {"bearer_auth": True}}
_PROBE_OPTIONS: Any = {"security": {"bearer_auth": True}}
TOKEN_PROBE_SECONDS = 10.0
PROBE_SECONDS = 5.0


def retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds the model asked us to wait: ``retry-after-ms``, else ``retry-after`` (seconds or
    an HTTP date); None when neither is there or readable."""
    millis = headers.get("retry-after-ms")
    if millis:
        try:
            return max(float(millis) / 1000, 0.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - time.time(), 0.0)


def _timed_out(exc: BaseException) -> bool:
    """Did a timeout cause this? The aiohttp adapter reports any lost connection (a refused
    connect, a server that hung up) as an httpx timeout, so look at what aiohttp raised."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, TimeoutError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _status_error(exc: openai.APIStatusError, setup: Setup, secrets: tuple[str, ...]) -> LLMError:
    status = exc.status_code
    said = endpoint_said(exc.body, exc.message, secrets)
    hint = status_hint(setup, status)
    log.warning("model request failed: HTTP %s from %s: %s%s", status, setup.endpoint, said,
                f" ({hint})" if hint else "")
    detail = joined(f"The endpoint said: {said}", hint)
    if status == 429:  # rate-limited even after the client's retries: tell the caller when to come back
        return LLMError("llm_unavailable", "The language model is busy (rate-limited). Please retry later.", 503,
                        retry_after(exc.response.headers), detail)
    if status in (401, 403):
        return LLMError("llm_error", f"The language model refused the service's credentials (HTTP {status}).", 502,
                        detail=detail)
    return LLMError("llm_error", f"The language model returned an error (HTTP {status}).", 502, detail=detail)


class OpenAIProvider:
    """One client per process, one pooled connection per concurrent request, reused."""

    def __init__(self, model_client: ModelClient) -> None:
        self.client = model_client.client
        self.model = model_client.wire.model
        self.name = model_client.name
        self.auth = model_client.auth
        self.api = model_client.wire.api
        self._wire = model_client.wire
        self._url = model_client.url
        self._credential = model_client.credential
        self._scope = model_client.scope
        self._secrets = model_client.secrets
        self.setup = Setup(model_client.name, model_client.auth, model_client.url, model_client.endpoint_var)
        self.endpoint = model_client.url
        self._chat_path = model_client.chat_path
        self._variants: dict[ModelChoice, OpenAIProvider] = {}
        # Extra headers for each request (the trace's ``traceparent``); None, and nothing asked, when tracing is off.
        self.request_headers: Callable[[], dict[str, str]] | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> OpenAIProvider:
        return cls(build_client(settings))

    def with_model(self, choice: ModelChoice) -> OpenAIProvider:
        """This provider (same client, endpoint and credentials) asking for a tenant's model, API,
        temperature and output limit. Built once per choice, then reused."""
        found = self._variants.get(choice)
        if found is None:
            model = choice.name or self.model
            api = choice.api or self.api
            temperature, limit = choice.temperature, choice.max_output_tokens
            wire = Responses(model, "/responses", temperature=temperature, max_output_tokens=limit) \
                if api == "responses" else \
                ChatCompletions(model, self._chat_path(model), temperature=temperature, max_output_tokens=limit)
            found = copy.copy(self)
            found._wire, found.model, found.api, found._variants = wire, model, api, {}
            if len(self._variants) >= MAX_VARIANTS:
                self._variants.clear()
            self._variants[choice] = found
        return found

    async def stream(self, messages: list[dict[str, Any]],
                     tools: list[dict[str, Any]]) -> AsyncIterator[str | ModelReply]:
        wire = self._wire
        body = wire.body(messages, tools)
        extra = self.request_headers
        options: Any = _OPTIONS if extra is None else {**_OPTIONS, "headers": {**_OPTIONS["headers"], **extra()}}
        try:
            response = cast(httpx2.Response, await self.client.post(
                wire.path, cast_to=httpx2.Response, content=body, options=options, stream=True,
                stream_cls=openai.AsyncStream[Any]))
        except openai.APIConnectionError as exc:  # APITimeoutError included
            if _timed_out(exc):
                raise LLMError("llm_error", "The language model did not answer in time.", 502) from exc
            log.warning("model endpoint %s unreachable: %s", self.setup.host, type(exc.__cause__ or exc).__name__)
            raise LLMError("llm_unavailable", f"The language model endpoint ({self.setup.host}) is unreachable.",
                           503, detail=unreachable_hint(self.setup)) from exc
        except openai.APIStatusError as exc:
            raise _status_error(exc, self.setup, self._secrets) from exc
        except openai.OpenAIError as exc:
            raise LLMError("llm_error", "The language model returned an invalid response.", 502) from exc
        except Exception as exc:
            if self._credential is not None and type(exc).__module__.startswith("azure."):
                log.warning("Microsoft Entra ID sign-in failed: %s", type(exc).__name__)
                raise LLMError("llm_unavailable", "Could not sign in to Azure (Microsoft Entra ID).", 503) from exc
            raise
        try:
            async for item in wire.read(sse_events(response.aiter_bytes())):
                yield item
        except httpx2.HTTPError as exc:
            if _timed_out(exc):
                raise LLMError("llm_error", "The language model did not answer in time.", 502) from exc
            raise LLMError("llm_error", "The language model's answer broke off before it ended.", 502) from exc
        except ValueError as exc:  # orjson.JSONDecodeError
            raise LLMError("llm_error", "The language model returned an invalid response.", 502) from exc
        finally:
            await response.aclose()

    async def probe(self) -> ProbeStatus:
        """Can a token be had (Entra ID), is the endpoint reachable (a TCP connect), and does it
        take our credentials? The last asks for the model list: authenticated, not a billed call."""
        if self._credential is not None:
            try:
                await asyncio.wait_for(self._credential.get_token(self._scope), TOKEN_PROBE_SECONDS)
            except Exception as exc:
                log.warning("Microsoft Entra ID: no token (%s)", type(exc).__name__)
                return "no_credential"
        parts = urlsplit(self._url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(parts.hostname, port), 1.0)
        except (OSError, TimeoutError):
            return "unreachable"
        writer.close()
        try:
            await writer.wait_closed()
        except OSError:
            pass
        return await self._credentials_taken()

    async def _credentials_taken(self) -> ProbeStatus:
        try:
            quick = self.client.with_options(max_retries=0, timeout=PROBE_SECONDS)
            response = cast(httpx2.Response, await quick.get("/models", cast_to=httpx2.Response,
                                                            options=_PROBE_OPTIONS))
            await response.aclose()
        except openai.APIStatusError as exc:
            if exc.status_code in (401, 403):
                return "rejected"
        except openai.APIConnectionError:
            return "unreachable"
        except Exception as exc:  # a reachable endpoint that does not list models is still reachable
            log.debug("model list probe: %s", type(exc).__name__)
        return "healthy"

    async def close(self) -> None:
        await self.client.close()
        if self._credential is not None:
            await self._credential.close()
