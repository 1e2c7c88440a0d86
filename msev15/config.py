"""One typed, frozen Settings object, read once from the environment and an optional .env file.

Every variable is declared once in ``VARIABLES`` (name, default, parser, meaning). That table
builds ``Settings``, validates it, masks secrets, and is what ``.env.example`` and the README's
configuration reference are checked against, so the three cannot drift apart.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import ipaddress
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from msev15.common.env import (
    LOG_LEVELS,
    SettingsError,
    Var,
    boolean,
    env_file_or_default,
    float_between,
    http_url,
    http_url_like,
    int_between,
    masked_values,
    one_of,
    parse_each_variable,
    single_line,
    stripped,
)

PROVIDERS = ("auto", "azure", "openai", "offline")


# --- parsers of the service's own (the common ones come from msev15.common.env) -------------


def _origins(raw: str) -> tuple[str, ...]:
    items = tuple(o.strip() for o in raw.split(",") if o.strip())
    if not items:
        raise ValueError("'*' or a comma-separated list of origins such as https://app.example.com")
    for origin in items:
        if origin != "*" and not re.fullmatch(r"https?://[^/\s]+", origin):
            raise ValueError(f"'*' or origins like https://app.example.com (bad: {origin!r})")
    return items


_API_VERSION = re.compile(r"(\d{4})-(\d{2})-(\d{2})(?:-preview)?")
API_VERSION_LABELS = ("v1", "preview", "latest")  # the /openai/v1 API's own versions


def _api_version(raw: str) -> str:
    value = raw.strip()
    found = _API_VERSION.fullmatch(value)
    if found:
        year, month, day = (int(part) for part in found.groups())
        if 1 <= month <= 12 and 1 <= day <= 31 and year >= 2022:
            return value
    elif value in API_VERSION_LABELS:
        return value
    raise ValueError("a dated Azure OpenAI API version such as 2024-10-21 or 2025-04-01-preview, "
                     "or v1, preview or latest")


def _networks(raw: str) -> tuple[str, ...]:
    items = tuple(i.strip() for i in raw.split(",") if i.strip())
    for item in items:
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise ValueError(f"comma-separated IP addresses or CIDR networks (bad: {item!r})") from None
    return items


_EMAIL_RE = re.compile(r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+"  # local part
                       r"@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$")


def _email(raw: str) -> str:
    value = raw.strip()
    if value and not _EMAIL_RE.match(value):
        raise ValueError("an email address such as support@example.com, or empty")
    return value


def _domains(raw: str) -> tuple[str, ...]:
    items = tuple(d.strip().lower() for d in raw.split(",") if d.strip())
    for item in items:
        if not re.fullmatch(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)+", item):
            raise ValueError(f"comma-separated domain names (bad: {item!r})")
    return items


def _tool_patterns(raw: str) -> tuple[str, ...]:
    items = tuple(i.strip() for i in raw.split(",") if i.strip())
    for item in items:
        if not re.fullmatch(r"[A-Za-z0-9_*?\[\]!:.-]{1,128}", item):
            raise ValueError(f"comma-separated tool names or fnmatch patterns such as send_* (bad: {item!r})")
    return items


_S, _L, _A, _M, _D, _E, _G = "Server", "LLM", "Agent", "MCP", "Orders", "Email", "Logging"
SESSION_STORES = ("memory", "sqlite", "redis", "postgres")


def _public_url(raw: str) -> str:
    value = raw.strip().rstrip("/")
    if not value:
        return ""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        raise ValueError("an http(s) URL without query or fragment, such as https://support.example.com")
    return value


def _redis_url(raw: str) -> str:
    value = raw.strip()
    if value and urlsplit(value).scheme not in ("redis", "rediss", "unix", "redis+cluster", "rediss+cluster"):
        raise ValueError("a redis://, rediss:// or unix:// URL such as redis://127.0.0.1:6379/0, or "
                         "redis+cluster://host:port for a Redis Cluster")
    return value


def _database_url(raw: str) -> str:
    value = raw.strip()
    if not value:
        return value
    parts = urlsplit(value)
    if parts.scheme not in ("postgresql", "postgres") or not (parts.hostname or "host=" in parts.query):
        raise ValueError("a postgresql:// URL such as postgresql://user:password@127.0.0.1:5432/msev15")
    try:
        parts.port  # noqa: B018 (a bad port raises here, not when the pool first connects)
    except ValueError as exc:
        raise ValueError(f"a postgresql:// URL with a valid port ({exc})") from None
    return value

AUTH_MODES = ("none", "api_key", "jwt")

VARIABLES: tuple[Var, ...] = (
    Var("SERVER_HOST", "0.0.0.0", stripped, "Interface to bind.", _S),
    Var("SERVER_PORT", "9080", int_between(1, 65535), "TCP port to listen on.", _S),
    Var("LOG_LEVEL", "INFO", one_of(*LOG_LEVELS, upper=True), "DEBUG, INFO, WARNING, ERROR or CRITICAL.", _S),
    Var("ENABLE_CORS", "true", boolean, "Send CORS headers (aiohttp-cors).", _S),
    Var("CORS_ORIGINS", "*", _origins, "'*' or a comma-separated list of allowed origins.", _S),
    Var("ENABLE_RATE_LIMITING", "false", boolean, "Per-IP sliding-window rate limiting.", _S),
    Var("RATE_LIMIT_PER_MINUTE", "100", int_between(1, 1_000_000), "Requests per client IP per 60 s window.", _S),
    Var("RATE_LIMIT_PER_TENANT_PER_MINUTE", "0", int_between(0, 100_000_000),
        "Requests per tenant per 60 s window (beside the per-IP limit); 0 turns it off.", _S),
    Var("TRUSTED_PROXIES", "", _networks, "Proxies whose X-Forwarded-For is believed (IPs or CIDRs).", _S),
    Var("PUBLIC_BASE_URL", "", _public_url,
        "The URL clients reach the service at (behind a TLS proxy); the A2A card's URL starts with it. "
        "Empty: the request's own scheme and Host.", _S),
    Var("SHUTDOWN_TIMEOUT_SECONDS", "30", float_between(0.1, 3600), "How long in-flight turns may run after SIGTERM.",
        _S),
    Var("MAX_BODY_BYTES", "1048576", int_between(1024, 64 * 1024 * 1024), "Largest accepted request body.", _S),
    Var("REQUEST_BODY_TIMEOUT_SECONDS", "10", float_between(0.1, 600),
        "A request body must arrive within this (slow clients get 408).", _S),
    Var("KEEPALIVE_TIMEOUT_SECONDS", "0", float_between(0, 3600),
        "Deprecated alias of HTTP_KEEPALIVE_SECONDS: when not 0 it is used instead.", _S),
    Var("HTTP_HEADER_TIMEOUT_SECONDS", "10", float_between(0.1, 600),
        "A new connection must send its request head within this, or it is closed.", _S),
    Var("HTTP_KEEPALIVE_SECONDS", "15", float_between(0.1, 3600), "Idle keep-alive connections close after this.", _S),
    Var("HTTP_MAX_CONNECTIONS", "0", int_between(0, 10_000_000),
        "Open client connections at most; 0 means half the process's open-files limit.", _S),
    Var("METRICS_TOKEN", "", stripped, "If set, GET /metrics needs 'Authorization: Bearer <token>'.", _S, secret=True),
    Var("METRICS_TENANT_LABELS", "false", boolean, "Add a tenant label to the turn metrics.", _S),
    Var("METRICS_MAX_TENANTS", "50", int_between(1, 10_000),
        "Tenants labelled by name; the rest count as 'other'.", _S),
    Var("SSE_PING_SECONDS", "15", float_between(0.1, 3600), "Interval of ': ping' keep-alive comments on streams.", _S),
    Var("REDOC_JS_URL", "", http_url_like("https://cdn.redoc.ly/redoc/latest/bundles/redoc.standalone.js"),
        "Where /redoc loads ReDoc from; empty serves the bundled copy (works offline).",
        _S),
    Var("PLAYGROUND_ENABLED", "true", boolean, "Serve the browser playground at /.", _S),
    Var("AUTH_MODE", "none", one_of(*AUTH_MODES),
        "none (trust the tenant_id clients send), api_key or jwt (the credential names the tenant).", _S),
    Var("API_KEYS_DB_PATH", "./data/api_keys.db", stripped,
        "SQLite file of the API keys and tenant profiles (msev15 keys ..., msev15 profile ...).", _S),
    Var("API_KEYS_CACHE_SECONDS", "2", float_between(0, 5),
        "How long a key lookup is cached; a revoked key is refused within this on every instance.", _S),
    Var("JWT_JWKS_URL", "", http_url_like("https://login.example.com/.well-known/jwks.json"),
        "JWKS of the token issuer (or set JWT_PUBLIC_KEY_FILE).", _S),
    Var("JWT_PUBLIC_KEY_FILE", "", stripped, "PEM public key that verifies tokens (instead of a JWKS).", _S),
    Var("JWT_ISSUER", "", single_line, "Required 'iss' of tokens.", _S),
    Var("JWT_AUDIENCE", "", single_line, "Required 'aud' of tokens.", _S),
    Var("JWT_TENANT_CLAIM", "tenant_id", single_line, "The claim that names the caller's tenant.", _S),
    Var("JWT_MAX_LIFETIME_SECONDS", "86400", int_between(60, 31_536_000),
        "Longest accepted token life: 'exp' must be a number at most this far past 'iat' (or now).", _S),
    Var("JWT_ROLES_CLAIM", "roles", single_line,
        "The claim that holds the caller's roles (a string or a list: customer, operator, admin).", _S),
    Var("APPROVAL_BY", "anyone", one_of("anyone", "operator"),
        "Who decides pending tool-call approvals: anyone of the tenant, or an operator (or admin).", _S),
    Var("AUTH_PROTECT_DOCS", "false", boolean, "Require a credential for /docs, /redoc and /openapi.json too.", _S),
    Var("AUTH_MAX_FAILURES_PER_MINUTE", "20", int_between(1, 1_000_000),
        "Failed authentications per client IP per minute; beyond it 429.", _S),
    Var("LLM_PROVIDER", "auto", one_of(*PROVIDERS), "auto, azure, openai or offline.", _A),
    Var("AZURE_AI_PROJECT_ENDPOINT", "",
        http_url_like("https://<resource>.services.ai.azure.com/api/projects/<project>"),
        "Azure AI Foundry project endpoint; used (Entra ID, its /openai/v1 URL) "
        "when AZURE_OPENAI_ENDPOINT is empty.", _L),
    Var("AZURE_OPENAI_RESPONSES_DEPLOYMENT_NAME", "gpt-4o", single_line, "Azure OpenAI deployment to call.", _L),
    Var("AZURE_OPENAI_ENDPOINT", "", http_url_like("https://<resource>.openai.azure.com"),
        "Azure OpenAI resource endpoint.", _L),
    Var("AZURE_OPENAI_API_KEY", "", stripped, "Azure OpenAI API key; empty: sign in with Microsoft Entra ID.", _L,
        secret=True),
    Var("AZURE_OPENAI_API_VERSION", "2024-10-21", _api_version,
        "Azure OpenAI API version, or 'v1' for the /openai/v1 URL "
        "(LLM_API=responses uses v1 below 2025-03-01-preview).", _L),
    Var("OPENAI_BASE_URL", "", http_url_like("https://api.openai.com/v1 or http://localhost:11434/v1"),
        "OpenAI-compatible base URL (OpenAI, Ollama, vLLM, llama.cpp).", _L),
    Var("OPENAI_API_KEY", "", stripped, "API key for the OpenAI-compatible endpoint.", _L, secret=True),
    Var("OPENAI_MODEL", "gpt-4o-mini", single_line, "Model name for the OpenAI-compatible endpoint.", _L),
    Var("LLM_MAX_RETRIES", "2", int_between(0, 10), "Retries of transient model errors (429, 5xx, timeouts).", _L),
    Var("LLM_TIMEOUT_SECONDS", "60", float_between(1, 600), "Timeout of one model request.", _L),
    Var("LLM_API", "chat", one_of("chat", "responses"),
        "chat (Chat Completions) or responses (the Responses API).", _L),
    Var("LLM_CONTEXT_MAX_CHARS", "200000", int_between(1000, 100_000_000),
        "Characters of history sent to the model; the newest whole turns that fit.", _L),
    Var("LLM_MAX_OUTPUT_CHARS", "100000", int_between(100, 100_000_000),
        "Longest model output in one turn; past it the turn ends with model_output_too_large.", _L),
    Var("SYSTEM_PROMPT_FILE", "", stripped, "File with the agent's system prompt (built-in one if empty).", _A),
    Var("AGENT_MAX_CONCURRENT_TURNS", "100", int_between(1, 100_000), "Turns of different sessions run at once.", _A),
    Var("AGENT_MAX_CONCURRENT_TURNS_PER_TENANT", "0", int_between(0, 100_000),
        "Turns of one tenant run at once; 0 means a quarter of AGENT_MAX_CONCURRENT_TURNS.", _A),
    Var("AGENT_MAX_QUEUED_TURNS_PER_TENANT", "100", int_between(1, 1_000_000),
        "Turns of one tenant waiting to run; beyond it chats get 429 tenant_busy.", _A),
    Var("AGENT_MAX_TOOL_ROUNDS", "8", int_between(1, 50), "Model/tool round trips in one turn.", _A),
    Var("TOOL_TIMEOUT_SECONDS", "30", float_between(0.1, 600), "Timeout of one tool call.", _A),
    Var("TOOL_APPROVAL", "", _tool_patterns,
        "Tools whose calls wait for a person's approval: comma-separated names or fnmatch patterns "
        "(update_order_status,send_*); empty: none wait.", _A),
    Var("PENDING_TIMEOUT_SECONDS", "86400", int_between(1, 365 * 86400),
        "A call waiting for approval or a client's output is settled as expired after this long.", _A),
    Var("SESSION_TTL_SECONDS", "0", int_between(0, 365 * 86400),
        "Idle sessions expire after this long (0: never), in every store.", _A),
    Var("SESSION_MAX_CONTEXT_MESSAGES", "40", int_between(1, 1000), "History messages sent to the model.", _A),
    Var("SESSION_MAX_MESSAGES", "1000", int_between(10, 1_000_000),
        "Messages kept per session; the oldest whole turns are dropped beyond it.", _A),
    Var("SESSION_MAX_SESSIONS", "250000", int_between(1, 100_000_000),
        "Sessions kept in the session store (all tenants); beyond it the tenant holding the most "
        "loses its least recently active.", _A),
    Var("SESSION_MAX_SESSIONS_PER_TENANT", "0", int_between(0, 100_000_000),
        "Sessions kept for one tenant; its least recently active go beyond it. 0 means no cap of its own.", _A),
    Var("SESSION_MAX_BYTES", "262144", int_between(1024, 1_000_000_000),
        "Bytes of messages kept per session; the oldest whole turns are dropped beyond it.", _A),
    Var("SESSION_STORE", "memory", one_of(*SESSION_STORES),
        "memory (per process), sqlite (durable on one machine), redis or postgres (shared by many instances; "
        "postgres needs DATABASE_URL).", _A),
    Var("SESSION_DB_PATH", "./data/sessions.db", stripped, "SQLite file of the sessions (SESSION_STORE=sqlite).", _A),
    Var("REDIS_URL", "", _redis_url, "Redis for SESSION_STORE=redis, e.g. redis://127.0.0.1:6379/0 "
        "(redis+cluster://host:port: a Redis Cluster).", _A, secret=True),
    Var("REDIS_CLUSTER", "false", boolean, "REDIS_URL names a node of a Redis Cluster (as redis+cluster:// does).", _A),
    Var("DATABASE_URL", "", _database_url,
        "PostgreSQL, the system of record when set (orders, API keys, tenant profiles, feedback, handoffs, "
        "pending calls; sessions with SESSION_STORE=postgres), e.g. postgresql://msev15:secret@127.0.0.1:5432/msev15.",
        _A,
        secret=True),
    Var("REDIS_LEASE_SECONDS", "10", float_between(1, 300),
        "An instance that stops heartbeating for this long loses its turns (turn_lost) to the others.", _A),
    Var("STREAM_RETENTION_SECONDS", "300", int_between(0, 7 * 86400),
        "A finished turn's events stay resumable this long.", _A),
    Var("STREAM_MAX_RETAINED_EVENTS", "200000", int_between(0, 100_000_000),
        "Events kept for finished turns (all tenants); the oldest turns go first beyond it.", _A),
    Var("HANDOFF_ENABLED", "true", boolean,
        "Offer the model the handoff_to_human tool: a person of the tenant takes the conversation over.", _A),
    Var("HANDOFF_TIMEOUT_SECONDS", "300", float_between(0.1, 7 * 86400),
        "A handoff no operator claims within this becomes an escalation ticket; the agent takes the session back.",
        _A),
    Var("MAX_MESSAGE_CHARS", "16000", int_between(1, 1_000_000), "Longest accepted user message.", _A),
    Var("MCP_SERVER_URL", "http://localhost:8000/mcp", http_url, "Complaints MCP server (Streamable HTTP).", _M),
    Var("MCP_SERVER_REQUIRED", "false", boolean, "Refuse readiness (and start-up) without the MCP server.", _M),
    Var("MCP_CONNECT_TIMEOUT_SECONDS", "10", float_between(0.1, 600), "Wait at start when MCP is required.", _M),
    Var("ESCALATION_MCP_URL", "", http_url, "EscalationComms MCP server (adds the sendemail tool).", _M),
    Var("MCP_AUTH_TOKEN", "", stripped, "Bearer token sent to the MCP servers (they require it when set).", _M,
        secret=True),
    Var("ESCALATION_MCP_AUTH_TOKEN", "", stripped,
        "Bearer token for the escalation MCP server when it differs from MCP_AUTH_TOKEN.", _M, secret=True),
    Var("MCP_IDLE_SECONDS", "300", float_between(1, 86400),
        "A tenant's MCP server connection (agent profiles) unused this long is closed.", _M),
    Var("MCP_MAX_CONNECTIONS", "100", int_between(1, 10_000),
        "Most tenant MCP server connections open at once; the least recently used idle one closes first.", _M),
    Var("ORDER_DB_PATH", "./data/orders.db", stripped, "SQLite file of the orders.", _D),
    Var("ORDER_DB_SEED", "true", boolean, "Seed demo orders for the default tenant on an empty database.", _D),
    Var("SMTP_SERVER", "", single_line, "SMTP host; empty writes mail to EMAIL_OUTBOX_DIR instead.", _E),
    Var("SMTP_PORT", "587", int_between(1, 65535), "587 STARTTLS, 465 implicit TLS, other ports plain.", _E),
    Var("SENDER_EMAIL", "", _email, "From address (and SMTP login).", _E),
    Var("SENDER_PASSWORD", "", stripped, "SMTP password; login is skipped when empty.", _E, secret=True),
    Var("SENDER_NAME", "Customer Service", single_line, "Display name of the From address.", _E),
    Var("EMAIL_OUTBOX_DIR", "./data/outbox", stripped, "Folder of .eml files when no SMTP server is set.", _E),
    Var("EMAIL_MAX_RECIPIENTS", "20", int_between(1, 1000), "Most recipients (to+cc+bcc) per message.", _E),
    Var("EMAIL_ALLOWED_DOMAINS", "", _domains, "If set, only these recipient domains are allowed.", _E),
    Var("EMAIL_MAX_PER_TENANT_PER_HOUR", "100", int_between(0, 1_000_000),
        "Messages the email tools may send per tenant per hour (all instances, with Redis); 0 means no limit.", _E),
    Var("EMAIL_ATTACHMENTS_DIR", "./data/attachments", stripped, "The only folder attachments may come from.", _E),
    Var("EMAIL_MAX_ATTACHMENT_BYTES", "10485760", int_between(1, 100 * 1024 * 1024), "Largest attachment.", _E),
    Var("SMTP_TIMEOUT_SECONDS", "8", float_between(0.1, 600),
        "Timeout of one SMTP operation; a send tries 3 times, within TOOL_TIMEOUT_SECONDS.", _E),
    Var("LOG_TO_FILE", "true", boolean, "Also write logs to a rotating file.", _G),
    Var("LOG_FILE_PATH", "./logs/app.log", stripped, "Log file (its folder is created).", _G),
    Var("LOG_MAX_SIZE_MB", "100", int_between(1, 100_000), "Rotate the log file at this size.", _G),
    Var("LOG_BACKUP_COUNT", "5", int_between(0, 1000), "Rotated log files kept.", _G),
)


@dataclass(frozen=True, slots=True)
class Settings:
    server_host: str
    server_port: int
    log_level: str
    enable_cors: bool
    cors_origins: tuple[str, ...]
    enable_rate_limiting: bool
    rate_limit_per_minute: int
    rate_limit_per_tenant_per_minute: int
    trusted_proxies: tuple[str, ...]
    public_base_url: str
    shutdown_timeout_seconds: float
    max_body_bytes: int
    request_body_timeout_seconds: float
    keepalive_timeout_seconds: float
    http_header_timeout_seconds: float
    http_keepalive_seconds: float
    http_max_connections: int
    metrics_token: str
    metrics_tenant_labels: bool
    metrics_max_tenants: int
    sse_ping_seconds: float
    redoc_js_url: str
    playground_enabled: bool
    auth_mode: str
    api_keys_db_path: str
    api_keys_cache_seconds: float
    jwt_jwks_url: str
    jwt_public_key_file: str
    jwt_issuer: str
    jwt_audience: str
    jwt_tenant_claim: str
    jwt_max_lifetime_seconds: int
    jwt_roles_claim: str
    approval_by: str
    auth_protect_docs: bool
    auth_max_failures_per_minute: int
    llm_provider: str
    azure_ai_project_endpoint: str
    azure_openai_responses_deployment_name: str
    azure_openai_endpoint: str
    azure_openai_api_key: str
    azure_openai_api_version: str
    openai_base_url: str
    openai_api_key: str
    openai_model: str
    llm_max_retries: int
    llm_timeout_seconds: float
    llm_api: str
    llm_context_max_chars: int
    llm_max_output_chars: int
    system_prompt_file: str
    agent_max_concurrent_turns: int
    agent_max_concurrent_turns_per_tenant: int
    agent_max_queued_turns_per_tenant: int
    agent_max_tool_rounds: int
    tool_timeout_seconds: float
    tool_approval: tuple[str, ...]
    pending_timeout_seconds: int
    session_ttl_seconds: int
    session_max_context_messages: int
    session_max_messages: int
    session_max_sessions: int
    session_store: str
    session_db_path: str
    redis_url: str
    redis_cluster: bool
    database_url: str
    redis_lease_seconds: float
    session_max_sessions_per_tenant: int
    session_max_bytes: int
    stream_retention_seconds: int
    stream_max_retained_events: int
    max_message_chars: int
    handoff_enabled: bool
    handoff_timeout_seconds: float
    mcp_server_url: str
    mcp_server_required: bool
    mcp_connect_timeout_seconds: float
    escalation_mcp_url: str
    mcp_auth_token: str
    escalation_mcp_auth_token: str
    mcp_idle_seconds: float
    mcp_max_connections: int
    order_db_path: str
    order_db_seed: bool
    smtp_server: str
    smtp_port: int
    sender_email: str
    sender_password: str
    sender_name: str
    email_outbox_dir: str
    email_max_recipients: int
    email_allowed_domains: tuple[str, ...]
    email_max_per_tenant_per_hour: int
    email_attachments_dir: str
    email_max_attachment_bytes: int
    smtp_timeout_seconds: float
    log_to_file: bool
    log_file_path: str
    log_max_size_mb: int
    log_backup_count: int

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, env_file: str | Path | None = None) -> Settings:
        """Environment wins over the .env file, which wins over the defaults.

        Raises :class:`SettingsError` listing every bad variable at once, and, when there is one,
        the problems across variables too (:meth:`problems`), so one run reports everything.
        """
        values, problems = parse_each_variable(VARIABLES, environ, env_file)
        settings = cls(**values)
        if settings.session_store == "redis" and not settings.redis_url:
            problems.append("REDIS_URL is required when SESSION_STORE=redis, e.g. redis://127.0.0.1:6379/0")
        if settings.redis_cluster and urlsplit(settings.redis_url).scheme == "unix":
            problems.append("REDIS_CLUSTER=true needs a redis:// or rediss:// REDIS_URL (a cluster node)")
        if settings.session_store == "postgres" and not settings.database_url:
            problems.append("DATABASE_URL is required when SESSION_STORE=postgres, "
                            "e.g. postgresql://msev15:secret@127.0.0.1:5432/msev15")
        if problems:
            raise SettingsError(problems + settings.problems())
        return settings

    @classmethod
    def defaults(cls, **overrides: Any) -> Settings:
        """Embedded defaults with overrides (by attribute name); for tests and tools."""
        return dataclasses.replace(cls.from_env({}), **overrides)

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    def masked(self) -> dict[str, Any]:
        """Every setting by variable name, secrets masked: safe to print or log."""
        return masked_values(self, VARIABLES)

    def secrets(self) -> tuple[str, ...]:
        """The configured secret values (to scrub them from any log line)."""
        return tuple(v for var in VARIABLES if var.secret and (v := getattr(self, var.attr)))

    @property
    def smtp_configured(self) -> bool:
        return bool(self.smtp_server)

    @property
    def keepalive_seconds(self) -> float:
        """HTTP_KEEPALIVE_SECONDS, unless the deprecated KEEPALIVE_TIMEOUT_SECONDS is set."""
        return self.keepalive_timeout_seconds or self.http_keepalive_seconds

    @property
    def provider(self) -> str:
        """The LLM provider actually used (``auto`` resolved)."""
        if self.llm_provider != "auto":
            return self.llm_provider
        if self.azure_openai_endpoint or self.azure_ai_project_endpoint:
            return "azure"  # with AZURE_OPENAI_API_KEY, or keyless through Microsoft Entra ID
        if self.openai_base_url:
            return "openai"
        return "offline"

    @property
    def azure_auth(self) -> str:
        """How Azure is called: "api-key", or "entra-id" (DefaultAzureCredential) without a key."""
        return "api-key" if self.azure_openai_api_key else "entra-id"

    @property
    def model_name(self) -> str:
        return {
            "azure": self.azure_openai_responses_deployment_name,
            "openai": self.openai_model,
        }.get(self.provider, "offline assistant")

    def problems(self) -> list[str]:
        """Cross-field problems found once all values parse (reported like parse errors)."""
        found = []
        if self.llm_provider == "azure" and not (self.azure_openai_endpoint or self.azure_ai_project_endpoint):
            found.append("LLM_PROVIDER=azure needs AZURE_OPENAI_ENDPOINT (or AZURE_AI_PROJECT_ENDPOINT); "
                         "without AZURE_OPENAI_API_KEY it signs in with Microsoft Entra ID")
        if (self.provider == "azure" and self.azure_auth == "entra-id"
                and importlib.util.find_spec("azure.identity") is None):
            found.append("Azure OpenAI without AZURE_OPENAI_API_KEY signs in with Microsoft Entra ID, which needs "
                         "the azure extra: pip install 'msev15e2e[azure]'")
        if self.llm_provider == "openai" and not self.openai_base_url:
            found.append("LLM_PROVIDER=openai needs OPENAI_BASE_URL")
        if self.auth_mode == "jwt":
            if bool(self.jwt_jwks_url) == bool(self.jwt_public_key_file):
                found.append("AUTH_MODE=jwt needs exactly one of JWT_JWKS_URL and JWT_PUBLIC_KEY_FILE")
            if self.jwt_public_key_file and not Path(self.jwt_public_key_file).is_file():
                found.append(f"JWT_PUBLIC_KEY_FILE must be a readable PEM file, got {self.jwt_public_key_file!r}")
            if not (self.jwt_issuer and self.jwt_audience):
                found.append("AUTH_MODE=jwt needs JWT_ISSUER and JWT_AUDIENCE (tokens for other services "
                             "must not be accepted)")
        if self.system_prompt_file:
            try:
                readable = bool(Path(self.system_prompt_file).read_text(encoding="utf-8").strip())
            except (OSError, UnicodeDecodeError):
                readable = False
            if not readable:
                found.append("SYSTEM_PROMPT_FILE must be a readable, non-empty UTF-8 text file, "
                             f"got {self.system_prompt_file!r}")
        return found


def load_settings(env_file: str | Path | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Settings for the CLI: ``--env-file`` if given, else ``./.env`` when it exists."""
    settings = Settings.from_env(environ, env_file_or_default(env_file))
    problems = settings.problems()
    if problems:
        raise SettingsError(problems)
    return settings


def command_settings(env_file: str | Path | None) -> Settings | None:
    """:func:`load_settings` for a command: None once the problems are printed to stderr (the
    command then exits 2)."""
    try:
        return load_settings(env_file)
    except SettingsError as exc:
        print("Configuration error:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return None


# The service's settings, for every package that reads them at run time (filled by create_app).
SETTINGS = web.AppKey("msev15.settings", Settings)
