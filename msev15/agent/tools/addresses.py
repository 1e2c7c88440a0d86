"""Addresses and header text written by the model, checked before they reach a message.

Recipient fields (``to``/``cc``/``bcc``) are parsed into :class:`Recipient` values, single-line
header values are refused if they hold a line break or other control character (so nothing can
inject a header), and :func:`valid_host` checks the configured SMTP server name.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from msev15.agent.tools.registry import ToolError
from msev15.common.mailguard import CONTROL, header_text_problem

__all__ = ["CONTROL", "Recipient", "parse_field", "single_line", "valid_host"]
_LOCAL = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")
_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
_NAMED = re.compile(r"(?P<name>[^<>\"]*)<(?P<addr>[^<>]*)>")
_HOST_LABEL = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9])?")


@dataclass(frozen=True, slots=True)
class Recipient:
    display_name: str
    address: str  # local@domain, domain lower-cased and IDNA-encoded

    @property
    def domain(self) -> str:
        return self.address.rpartition("@")[2]


def _parse_address(field: str, raw: str) -> Recipient:
    """One ``local@domain`` or ``Name <local@domain>``; raises ToolError naming the field."""
    text = raw.strip()
    named = _NAMED.fullmatch(text)
    name, addr = (named["name"].strip(), named["addr"].strip()) if named else ("", text)
    local, at, domain = addr.rpartition("@")
    try:
        domain = domain.encode("idna").decode("ascii").lower() if domain else ""
    except UnicodeError:
        domain = ""
    labels = domain.split(".")
    if (not at or len(local) > 64 or not _LOCAL.fullmatch(local) or len(labels) < 2 or len(domain) > 253
            or not all(_LABEL.fullmatch(label) for label in labels)):
        raise ToolError(f"'{field}' has an invalid address: {raw.strip()!r}")
    return Recipient(name, f"{local}@{domain}")


def _no_control(field: str, value: str) -> str:
    """No control character, raw or inside an RFC 2047 encoded word (see :mod:`msev15.common.mailguard`)."""
    problem = header_text_problem(value)
    if problem:
        raise ToolError(f"'{field}' {problem}; header injection is not allowed")
    return value


def parse_field(field: str, value: str | None, required: bool = False) -> list[Recipient]:
    value = _no_control(field, value or "")
    parts = [p for p in re.split(r"[,;]", value) if p.strip()]
    if required and not parts:
        raise ToolError(f"'{field}' needs at least one recipient address")
    return [_parse_address(field, part) for part in parts]


def single_line(field: str, value: str) -> str:
    if not _no_control(field, value).strip():
        raise ToolError(f"'{field}' is empty")
    return value.strip()


def valid_host(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        pass
    return len(host) <= 253 and all(_HOST_LABEL.fullmatch(label) for label in host.split("."))
