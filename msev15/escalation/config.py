"""Settings of the EscalationComms service, read once from the environment and an optional .env.

Every variable is declared once in ``VARIABLES`` (name, default, parser, meaning); that table
builds :class:`EscalationSettings`, validates it (one line per bad variable, naming it, the bad
value and what is expected) and masks secrets. The SMTP variables have the same names and
meaning as the main service's, so both programs can share one ``.env``.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import ipaddress
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from msev15.common.env import (
    LOG_LEVELS,
    SettingsError,
    Var,
    boolean,
    env_file_or_default,
    float_between,
    int_between,
    masked_values,
    one_of,
    parse_variables,
    single_line,
    stripped,
)
from msev15.escalation.models import EMAIL_RE

PROFILES = ("dev", "prod")

__all__ = ["VARIABLES", "EscalationSettings", "SettingsError", "AcsConnection", "parse_acs_connection_string",
           "load_settings"]


# --- parsers of our own (the common ones come from msev15.common.env) ----------------------


def _required_path(raw: str) -> str:
    value = raw.strip()
    if not value:
        raise ValueError("a file or folder path")
    return value


def _email_or(default: str) -> Callable[[str], str]:
    """An email address; empty means the default. The main service's .env may set SENDER_EMAIL=
    (empty: no SMTP login), and one .env can serve both programs."""

    def parse(raw: str) -> str:
        value = raw.strip() or default
        if not EMAIL_RE.fullmatch(value):
            raise ValueError("an email address such as support@example.com")
        return value

    return parse


def _base_url(raw: str) -> str:
    value = raw.strip().rstrip("/")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise ValueError("an http(s) URL without query, such as https://support.example.com/tickets")
    return value


@dataclass(frozen=True, slots=True)
class AcsConnection:
    """A parsed Azure Communication Services connection string."""

    endpoint: str  # scheme://host[:port], no trailing slash
    access_key: str

    @property
    def is_loopback(self) -> bool:
        host = urlsplit(self.endpoint).hostname or ""
        if host == "localhost":
            return True
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            return False


_ACS_EXPECTED = "endpoint=https://<resource>.communication.azure.com/;accesskey=<base64 key>"


def parse_acs_connection_string(raw: str) -> AcsConnection:
    """Parse ``endpoint=...;accesskey=...`` (keys case-insensitive), keeping the endpoint's scheme.

    The SDK's own parser always switches the endpoint to https; keeping the scheme lets a local
    ACS emulator on loopback be used in development (the prod profile refuses plain http).
    Raises ``ValueError`` naming what is wrong, never echoing the key.
    """
    fields: dict[str, str] = {}
    for element in raw.strip().split(";"):
        if not element.strip():
            continue
        key, sep, value = element.partition("=")
        if not sep:
            raise ValueError(f"Invalid Azure Communication Services connection string: expected {_ACS_EXPECTED}")
        fields[key.strip().lower()] = value.strip()
    endpoint, key = fields.get("endpoint", ""), fields.get("accesskey", "")
    missing = [name for name, value in (("endpoint", endpoint), ("accesskey", key)) if not value]
    if missing:
        raise ValueError(f"Invalid Azure Communication Services connection string: {' and '.join(missing)} "
                         f"missing; expected {_ACS_EXPECTED}")
    if "://" not in endpoint:
        endpoint = "https://" + endpoint
    parts = urlsplit(endpoint.rstrip("/"))
    try:
        valid = (parts.scheme in ("http", "https") and bool(parts.hostname) and not parts.path
                 and not parts.query and (parts.port or 0) >= 0)
    except ValueError:  # a port that is not a number
        valid = False
    if not valid:
        raise ValueError(f"Invalid Azure Communication Services connection string: the endpoint must be a "
                         f"URL such as https://<resource>.communication.azure.com/; expected {_ACS_EXPECTED}")
    try:
        base64.b64decode(key, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("Invalid Azure Communication Services connection string: accesskey is not base64; "
                         f"expected {_ACS_EXPECTED}") from None
    return AcsConnection(endpoint=f"{parts.scheme}://{parts.netloc}", access_key=key)


def _acs(raw: str) -> str:
    value = raw.strip()
    if value:
        try:
            parse_acs_connection_string(value)
        except ValueError as exc:
            # The message already says what is expected; the caller masks the value.
            raise ValueError(str(exc)) from None
    return value


VARIABLES: tuple[Var, ...] = (
    Var("PROFILE", "dev", one_of(*PROFILES), "dev or prod; prod refuses the file outbox and plain-http ACS."),
    Var("HOST", "127.0.0.1", single_line,
        "Interface to bind; loopback by default. To expose it, 0.0.0.0 (or an address) with MCP_AUTH_TOKEN."),
    Var("PORT", "8078", int_between(0, 65535), "TCP port of /mcp, /health and /metrics (0 picks a free one)."),
    Var("LOG_LEVEL", "INFO", one_of(*LOG_LEVELS, upper=True), "DEBUG, INFO, WARNING, ERROR or CRITICAL."),
    Var("AZURE_COMMUNICATION_CONNECTION_STRING", "", _acs,
        "ACS connection string; when set, mail goes through Azure Communication Services.", secret=True),
    Var("COMPANY_NAME", "Example Company", single_line,
        "Who the mail is from, in the greeting, the header and the footer (your company or brand)."),
    Var("SENDER_EMAIL", "noreply@example.com", _email_or("noreply@example.com"),
        "From address (and SMTP login); empty means the default."),
    Var("SENDER_NAME", "Customer Support", single_line, "Display name of the From address."),
    Var("SUPPORT_TEAM_EMAIL", "support@example.com", _email_or("support@example.com"),
        "Where the internal ticket email goes; empty means the default."),
    Var("SUPPORT_TEAM_NAME", "Support Team", single_line,
        "How the team signs the customer's mail, after the company name (\"Example Company Support Team\")."),
    Var("EMAIL_RETRY_COUNT", "3", int_between(1, 10), "Delivery attempts per message."),
    Var("EMAIL_TIMEOUT_SECONDS", "30", float_between(0.1, 600), "Time budget of one sendemail call, retries included."),
    Var("EMAIL_RETRY_BASE_SECONDS", "1.0", float_between(0, 60), "First backoff delay; doubles on each retry."),
    Var("TICKET_BASE_URL", "https://support.example.com/tickets", _base_url, "Customer's ticket tracking link prefix."),
    Var("ADMIN_TICKET_BASE_URL", "https://support.example.com/admin/tickets", _base_url,
        "Support team's dashboard link prefix."),
    Var("SMTP_SERVER", "", single_line, "SMTP host (used when no ACS connection string is set)."),
    Var("SMTP_PORT", "587", int_between(1, 65535), "587 STARTTLS, 465 implicit TLS, other ports plain."),
    Var("SENDER_PASSWORD", "", stripped, "SMTP password; login is skipped when empty.", secret=True),
    Var("EMAIL_OUTBOX_DIR", "./data/outbox", _required_path, "Folder of .eml files when neither ACS nor SMTP is set."),
    Var("ESCALATION_DB_PATH", "./data/escalation.db", _required_path, "SQLite file of delivery records."),
    Var("MCP_AUTH_TOKEN", "", stripped, "Bearer token every /mcp request must carry (the service's "
        "ESCALATION_MCP_AUTH_TOKEN or MCP_AUTH_TOKEN).", secret=True),
    Var("MCP_ALLOW_UNAUTHENTICATED", "false", boolean,
        "Start on a non-loopback HOST without MCP_AUTH_TOKEN (only behind a network policy)."),
)


@dataclass(frozen=True, slots=True)
class EscalationSettings:
    profile: str
    host: str
    port: int
    log_level: str
    azure_communication_connection_string: str
    company_name: str
    sender_email: str
    sender_name: str
    support_team_email: str
    support_team_name: str
    email_retry_count: int
    email_timeout_seconds: float
    email_retry_base_seconds: float
    ticket_base_url: str
    admin_ticket_base_url: str
    smtp_server: str
    smtp_port: int
    sender_password: str
    email_outbox_dir: str
    escalation_db_path: str
    mcp_auth_token: str
    mcp_allow_unauthenticated: bool

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None,
                 env_file: str | Path | None = None) -> EscalationSettings:
        """Environment wins over the .env file, which wins over the defaults.

        Raises :class:`SettingsError` listing every bad variable (and cross-field problem) at once.
        """
        settings = cls(**parse_variables(VARIABLES, environ, env_file))
        problems = settings.problems()
        if problems:
            raise SettingsError(problems)
        return settings

    @classmethod
    def defaults(cls, **overrides: Any) -> EscalationSettings:
        """Embedded defaults with overrides (by attribute name); for tests and tools."""
        return dataclasses.replace(cls.from_env({}), **overrides)

    def replace(self, **changes: Any) -> EscalationSettings:
        return dataclasses.replace(self, **changes)

    @property
    def backend(self) -> str:
        """The delivery backend chosen: ACS if configured, else SMTP, else the file outbox."""
        if self.azure_communication_connection_string:
            return "acs"
        if self.smtp_server:
            return "smtp"
        return "outbox"

    @property
    def acs_connection(self) -> AcsConnection | None:
        raw = self.azure_communication_connection_string
        return parse_acs_connection_string(raw) if raw else None

    def problems(self) -> list[str]:
        """Cross-field problems, found once every value parses."""
        found: list[str] = []
        if self.profile == "prod":
            if self.backend == "outbox":
                found.append("PROFILE=prod needs AZURE_COMMUNICATION_CONNECTION_STRING or SMTP_SERVER "
                             "(the file outbox is for development)")
            acs = self.acs_connection
            if acs is not None and not acs.endpoint.startswith("https://"):
                found.append("AZURE_COMMUNICATION_CONNECTION_STRING must use an https endpoint when PROFILE=prod")
        return found

    def masked(self) -> dict[str, Any]:
        """Every setting by variable name, secrets masked: safe to print or log."""
        return masked_values(self, VARIABLES)

    def secrets(self) -> tuple[str, ...]:
        """Secret values to scrub from log lines (the ACS key on its own too)."""
        found = [v for var in VARIABLES if var.secret and (v := getattr(self, var.attr))]
        acs = self.acs_connection
        if acs is not None:
            found.append(acs.access_key)
        return tuple(found)



def load_settings(env_file: str | Path | None = None,
                  environ: Mapping[str, str] | None = None) -> EscalationSettings:
    """Settings for the CLI: ``env_file`` if given, else ``./.env`` when it exists."""
    return EscalationSettings.from_env(environ, env_file_or_default(env_file))
