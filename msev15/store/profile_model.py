"""A tenant's agent profile: its parsed form and the rules a stored profile must meet (no I/O).

A profile is a JSON object (issue 25)::

    {"instructions": str, "tools": {"allow": [pattern], "deny": [pattern]}, "approval": [pattern],
     "mcp_servers": [{"name", "url", "headers"?: {header: value}, "tools"?: [pattern]}],
     "model": {"name"?, "api"?: "chat"|"responses", "temperature"?, "max_output_tokens"?},
     "handoff": {"enabled"?, "timeout_seconds"?}, "greeting"?: str}

Every field is optional; what is absent (None or empty in :class:`AgentProfile`) comes from the
service's settings, so :data:`DEFAULT_PROFILE` is today's agent. :func:`parse_profile` lists every
problem at once, and never echoes a value (a header value may be a secret). Sizes are bounded so
that a hostile PUT cannot store megabytes.

Secrets stay out of the store when the tenant wants: a header value ``env:MSEV15_TENANT_SECRET_X``
is read from the service's environment at connect time (:func:`resolve_headers`); an inline value
is stored as given and masked in every response and log (:func:`masked`).
"""

from __future__ import annotations

import copy
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

MAX_PROFILE_BYTES = 256 * 1024  # the whole profile as JSON (UTF-8)
MAX_INSTRUCTIONS_CHARS = 32_000
MAX_GREETING_CHARS = 4_000
MAX_PATTERNS = 200  # per list (allow, deny, approval, a server's tools)
MAX_PATTERN_CHARS = 200
MAX_SERVERS = 20
MAX_HEADERS = 20  # per server
MAX_HEADER_NAME_CHARS = 100
MAX_HEADER_VALUE_CHARS = 4_096
MAX_URL_CHARS = 2_048
MAX_MODEL_NAME_CHARS = 200
MAX_TIMEOUT_SECONDS = 7 * 24 * 3600
MAX_OUTPUT_TOKENS = 1_000_000
MODEL_APIS = ("chat", "responses")
ENV_PREFIX = "env:"
SECRET_PREFIX = "MSEV15_TENANT_SECRET_"
MASK = "***"

_SERVER_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
_SECRET_NAME_RE = re.compile(SECRET_PREFIX + r"[A-Za-z0-9_]+")  # any variable name after the prefix
_TOKEN_RE = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 9110 token
# Headers the MCP transport sets itself: a profile must not override them.
_RESERVED_HEADERS = frozenset({"host", "content-length", "content-type", "transfer-encoding", "connection",
                               "accept", "mcp-session-id", "mcp-protocol-version", "upgrade", "te", "trailer"})
_TOP = frozenset({"instructions", "tools", "approval", "mcp_servers", "model", "handoff", "greeting"})
_TOOLS = frozenset({"allow", "deny"})
_SERVER = frozenset({"name", "url", "headers", "tools"})
_MODEL = frozenset({"name", "api", "temperature", "max_output_tokens"})
_HANDOFF = frozenset({"enabled", "timeout_seconds"})


@dataclass(frozen=True, slots=True)
class McpServerSpec:
    name: str
    url: str
    headers: tuple[tuple[str, str], ...] = ()  # values as stored (inline, or "env:MSEV15_TENANT_SECRET_X")
    tools: tuple[str, ...] | None = None  # fnmatch patterns; None = every tool of the server

    def __repr__(self) -> str:  # never a header value in a log line or a traceback
        names = tuple(name for name, _ in self.headers)
        return f"McpServerSpec(name={self.name!r}, url={self.url!r}, headers={names!r}, tools={self.tools!r})"


@dataclass(frozen=True, slots=True)
class AgentProfile:
    instructions: str | None = None
    tools_allow: tuple[str, ...] | None = None
    tools_deny: tuple[str, ...] = ()
    approval: tuple[str, ...] | None = None
    mcp_servers: tuple[McpServerSpec, ...] = ()
    model_name: str | None = None
    model_api: str | None = None
    temperature: float | None = None
    max_output_tokens: int | None = None
    handoff_enabled: bool | None = None
    handoff_timeout_seconds: int | None = None
    greeting: str | None = None


DEFAULT_PROFILE = AgentProfile()


class ProfileInvalid(ValueError):
    """Every problem of a profile, each ``{"field": "tools.allow[2]", "message": ...}``."""

    def __init__(self, problems: list[dict[str, str]]) -> None:
        super().__init__("; ".join(f"{p['field']}: {p['message']}" for p in problems) or "invalid profile")
        self.problems = problems


class SecretMissing(LookupError):
    """A header names an ``env:`` variable the service's environment does not hold."""


def pattern_problem(pattern: object) -> str | None:
    """Why ``pattern`` is not an acceptable fnmatch pattern over tool names, or None."""
    if not isinstance(pattern, str):
        return "must be a string"
    if not pattern:
        return "must not be empty"
    if len(pattern) > MAX_PATTERN_CHARS:
        return f"must be at most {MAX_PATTERN_CHARS} characters"
    if any(ch.isspace() or not ch.isprintable() for ch in pattern):
        return "must not contain spaces or control characters"
    i = 0
    while i < len(pattern):
        if pattern[i] == "[":
            j = i + 1
            if j < len(pattern) and pattern[j] == "!":
                j += 1
            if j < len(pattern) and pattern[j] == "]":
                j += 1  # fnmatch: a "]" first in a set is a literal
            end = pattern.find("]", j)
            if end < 0:
                return "has an unbalanced '['"
            i = end
        i += 1
    return None


class _Checker:
    def __init__(self) -> None:
        self.problems: list[dict[str, str]] = []

    def add(self, field: str, message: str) -> None:
        self.problems.append({"field": field, "message": message})

    def obj(self, value: object, field: str, allowed: frozenset[str]) -> dict[str, Any] | None:
        if not isinstance(value, dict):
            self.add(field or "profile", "must be an object")
            return None
        for key in value:
            if key not in allowed:
                shown = key if isinstance(key, str) and len(key) <= 64 else "…"
                self.add(f"{field}.{shown}" if field else str(shown), "unknown field")
        return value

    def text(self, value: object, field: str, limit: int, *, empty: bool = True) -> str | None:
        if value is None:
            return None
        if not isinstance(value, str):
            self.add(field, "must be a string")
        elif len(value) > limit:
            self.add(field, f"must be at most {limit:,} characters")
        elif not empty and not value.strip():
            self.add(field, "must not be empty")
        else:
            return value
        return None

    def patterns(self, value: object, field: str) -> tuple[str, ...] | None:
        if value is None:
            return None
        if not isinstance(value, list):
            self.add(field, "must be a list of patterns")
            return None
        if len(value) > MAX_PATTERNS:
            self.add(field, f"must hold at most {MAX_PATTERNS} patterns")
            return None
        ok = True
        for i, pattern in enumerate(value):
            problem = pattern_problem(pattern)
            if problem:
                self.add(f"{field}[{i}]", problem)
                ok = False
        return tuple(value) if ok else None

    def integer(self, value: object, field: str, low: int, high: int) -> int | None:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            self.add(field, "must be an integer")
        elif not low <= value <= high:
            self.add(field, f"must be between {low} and {high:,}")
        else:
            return value
        return None

    def headers(self, value: object, field: str) -> tuple[tuple[str, str], ...]:
        if value is None:
            return ()
        if not isinstance(value, dict):
            self.add(field, "must be an object of header names to values")
            return ()
        if len(value) > MAX_HEADERS:
            self.add(field, f"must hold at most {MAX_HEADERS} headers")
            return ()
        seen: set[str] = set()
        found: list[tuple[str, str]] = []
        for name, raw in value.items():
            where = f"{field}.{name}" if len(name) <= MAX_HEADER_NAME_CHARS else f"{field}.…"
            if len(name) > MAX_HEADER_NAME_CHARS or not _TOKEN_RE.fullmatch(name):
                self.add(where, f"header name must be a token of at most {MAX_HEADER_NAME_CHARS} characters")
                continue
            if name.lower() in _RESERVED_HEADERS:
                self.add(where, "is set by the MCP transport and cannot be overridden")
            elif name.lower() in seen:
                self.add(where, "duplicate header (names are case-insensitive)")
            seen.add(name.lower())
            if not isinstance(raw, str):
                self.add(where, "value must be a string")
            elif len(raw) > MAX_HEADER_VALUE_CHARS:
                self.add(where, f"value must be at most {MAX_HEADER_VALUE_CHARS} characters")
            elif any(not ch.isprintable() for ch in raw):
                self.add(where, "value must not contain control characters")
            elif raw == MASK:
                self.add(where, "is the mask shown for a stored secret: send the secret or an env: reference")
            elif raw.startswith(ENV_PREFIX) and not _SECRET_NAME_RE.fullmatch(raw[len(ENV_PREFIX):]):
                self.add(where, f"an env: reference must name a variable {SECRET_PREFIX}[A-Z0-9_]+")
            else:
                found.append((name, raw))
        return tuple(found)

    def server(self, value: object, field: str) -> McpServerSpec | None:
        data = self.obj(value, field, _SERVER)
        if data is None:
            return None
        name = data.get("name")
        if not isinstance(name, str) or not _SERVER_NAME_RE.fullmatch(name):
            self.add(f"{field}.name", "required: 1-64 letters, digits, _ or - (starting with a letter or digit)")
            name = None
        url = data.get("url")
        if not isinstance(url, str) or len(url) > MAX_URL_CHARS or not _http_url(url):
            self.add(f"{field}.url", f"required: an http(s) URL of at most {MAX_URL_CHARS} characters")
            url = None
        elif _unroutable(url):
            self.add(f"{field}.url", "must not name a link-local or unspecified address (e.g. a cloud metadata "
                                     "service)")
            url = None
        headers = self.headers(data.get("headers"), f"{field}.headers")
        tools = self.patterns(data.get("tools"), f"{field}.tools")
        if name is None or url is None:
            return None
        return McpServerSpec(name=name, url=url, headers=headers, tools=tools)

    def servers(self, value: object, field: str) -> tuple[McpServerSpec, ...]:
        if value is None:
            return ()
        if not isinstance(value, list):
            self.add(field, "must be a list of servers")
            return ()
        if len(value) > MAX_SERVERS:
            self.add(field, f"must hold at most {MAX_SERVERS} servers")
            return ()
        found: list[McpServerSpec] = []
        names: set[str] = set()
        for i, item in enumerate(value):
            spec = self.server(item, f"{field}[{i}]")
            name = item.get("name") if isinstance(item, dict) else None
            if isinstance(name, str) and name:
                if name in names:
                    self.add(f"{field}[{i}].name", "duplicate server name")
                names.add(name)
            if spec is not None:
                found.append(spec)
        return tuple(found)


def _unroutable(url: str) -> bool:
    """A literal link-local (169.254/16: cloud metadata services; fe80::/10) or unspecified address:
    never an MCP server a tenant may name. Names resolving to one are for the connecting side."""
    import ipaddress
    from urllib.parse import urlsplit

    try:
        address = ipaddress.ip_address(urlsplit(url).hostname or "")
    except ValueError:
        return False  # a name, not a literal address
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_link_local or address.is_unspecified


def _http_url(url: str) -> bool:
    from urllib.parse import urlsplit

    if any(ch.isspace() or not ch.isprintable() for ch in url):
        return False
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def parse_profile(data: object) -> AgentProfile:
    """The parsed profile; :class:`ProfileInvalid` listing every problem otherwise."""
    check = _Checker()
    top = check.obj(data, "", _TOP)
    if top is None:
        raise ProfileInvalid(check.problems)
    try:
        size = len(json.dumps(top, ensure_ascii=False, allow_nan=False).encode())
    except (TypeError, ValueError):
        check.add("profile", "must be plain JSON (objects, lists, strings, numbers, booleans, null)")
        raise ProfileInvalid(check.problems) from None
    if size > MAX_PROFILE_BYTES:
        check.add("profile", f"must be at most {MAX_PROFILE_BYTES:,} bytes as JSON")
        raise ProfileInvalid(check.problems)
    # blank would send the model an empty system message: omit the field for the service's prompt
    instructions = check.text(top.get("instructions"), "instructions", MAX_INSTRUCTIONS_CHARS, empty=False)
    greeting = check.text(top.get("greeting"), "greeting", MAX_GREETING_CHARS)
    allow: tuple[str, ...] | None = None
    deny: tuple[str, ...] | None = None
    if "tools" in top and top["tools"] is not None:
        tools = check.obj(top["tools"], "tools", _TOOLS)
        if tools is not None:
            allow = check.patterns(tools.get("allow"), "tools.allow")
            deny = check.patterns(tools.get("deny"), "tools.deny")
    approval = check.patterns(top.get("approval"), "approval")
    servers = check.servers(top.get("mcp_servers"), "mcp_servers")
    model_name = model_api = None
    temperature: float | None = None
    max_tokens: int | None = None
    if top.get("model") is not None:
        model = check.obj(top["model"], "model", _MODEL)
        if model is not None:
            model_name = check.text(model.get("name"), "model.name", MAX_MODEL_NAME_CHARS, empty=False)
            api = model.get("api")
            if api is not None and api not in MODEL_APIS:
                check.add("model.api", "must be one of: chat, responses")
            else:
                model_api = api
            raw = model.get("temperature")
            if raw is not None:
                if isinstance(raw, bool) or not isinstance(raw, int | float) or not math.isfinite(raw):
                    check.add("model.temperature", "must be a number")
                elif not 0 <= raw <= 2:
                    check.add("model.temperature", "must be between 0 and 2")
                else:
                    temperature = float(raw)
            max_tokens = check.integer(model.get("max_output_tokens"), "model.max_output_tokens", 1,
                                       MAX_OUTPUT_TOKENS)
    enabled: bool | None = None
    timeout: int | None = None
    if top.get("handoff") is not None:
        handoff = check.obj(top["handoff"], "handoff", _HANDOFF)
        if handoff is not None:
            raw = handoff.get("enabled")
            if raw is not None and not isinstance(raw, bool):
                check.add("handoff.enabled", "must be true or false")
            else:
                enabled = raw
            timeout = check.integer(handoff.get("timeout_seconds"), "handoff.timeout_seconds", 1,
                                    MAX_TIMEOUT_SECONDS)
    if check.problems:
        raise ProfileInvalid(check.problems)
    return AgentProfile(instructions=instructions, tools_allow=allow, tools_deny=deny or (), approval=approval,
                        mcp_servers=servers, model_name=model_name, model_api=model_api, temperature=temperature,
                        max_output_tokens=max_tokens, handoff_enabled=enabled, handoff_timeout_seconds=timeout,
                        greeting=greeting)


def masked(profile_json: dict[str, Any]) -> dict[str, Any]:
    """A copy with every inline header value replaced by ``***`` (``env:`` references are not
    secrets and stay visible). Safe on any JSON, valid or not."""
    shown = copy.deepcopy(profile_json)
    servers = shown.get("mcp_servers") if isinstance(shown, dict) else None
    if isinstance(servers, list):
        for server in servers:
            headers = server.get("headers") if isinstance(server, dict) else None
            if isinstance(headers, dict):
                for name, value in headers.items():
                    if not (isinstance(value, str) and value.startswith(ENV_PREFIX)
                            and _SECRET_NAME_RE.fullmatch(value[len(ENV_PREFIX):])):
                        headers[name] = MASK
    return shown


def resolve_headers(spec: McpServerSpec, environ: Mapping[str, str]) -> dict[str, str]:
    """The headers to send to ``spec``'s server, ``env:`` values read from ``environ`` now (at
    connect time). :class:`SecretMissing` names the variable (never a value) when it is unset."""
    resolved: dict[str, str] = {}
    for name, value in spec.headers:
        if value.startswith(ENV_PREFIX):
            variable = value[len(ENV_PREFIX):]
            if variable not in environ:
                raise SecretMissing(f"MCP server {spec.name!r}: header {name} needs the environment variable "
                                    f"{variable}, which is not set")
            resolved[name] = environ[variable]
        else:
            resolved[name] = value
    return resolved
