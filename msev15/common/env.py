"""Settings from environment variables: declared once, parsed and validated, secrets masked.

Each program declares its variables as a table of :class:`Var` (name, default, parser, meaning)
and builds its frozen settings with :func:`parse_variables`. A parser takes the raw string and
returns the value, or raises ``ValueError`` naming what it expected; every bad variable is
reported at once, in one :class:`SettingsError`, with secrets masked.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
MASK = "********"


class SettingsError(ValueError):
    """Raised with one line per bad variable."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True, slots=True)
class Var:
    name: str
    default: str
    parse: Callable[[str], Any]
    doc: str
    group: str = ""
    secret: bool = False

    @property
    def attr(self) -> str:
        return self.name.lower()


# --- parsers: take the raw string, return the value or raise ValueError(expected) ---------------


def int_between(lo: int, hi: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        try:
            value = int(raw.strip())
        except ValueError:
            value = None
        if value is None or not lo <= value <= hi:
            raise ValueError(f"an integer between {lo} and {hi}")
        return value

    return parse


def float_between(lo: float, hi: float) -> Callable[[str], float]:
    def parse(raw: str) -> float:
        try:
            value = float(raw.strip())
        except ValueError:
            value = None
        if value is None or value != value or not lo <= value <= hi:
            raise ValueError(f"a number between {lo:g} and {hi:g}")
        return value

    return parse


def boolean(raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError("true or false")


def stripped(raw: str) -> str:
    return raw.strip()


def one_of(*choices: str, upper: bool = False) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.strip().upper() if upper else raw.strip().lower()
        if value not in choices:
            raise ValueError("one of " + ", ".join(choices))
        return value

    return parse


def http_url(raw: str) -> str:
    return _http_url(raw, "http://localhost:8000/mcp")


def http_url_like(example: str) -> Callable[[str], str]:
    """:func:`http_url` whose message gives ``example``: the URL of the variable's own kind."""
    return lambda raw: _http_url(raw, example)


def _http_url(raw: str, example: str) -> str:
    value = raw.strip()
    if not value:
        return ""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"an http(s) URL such as {example}, or empty")
    try:
        _ = parts.port  # reading it raises ValueError for a port out of range
    except ValueError:
        raise ValueError("an http(s) URL with a valid port") from None
    return value


def single_line(raw: str) -> str:
    value = raw.strip()
    if "\r" in value or "\n" in value:
        raise ValueError("a single line of text")
    return value


# --- reading and showing --------------------------------------------------------------------------


def parse_variables(variables: tuple[Var, ...], environ: Mapping[str, str] | None,
                    env_file: str | Path | None) -> dict[str, Any]:
    """Values by attribute name: environment, then the .env file, then the default.

    Raises :class:`SettingsError` with one line per bad variable, secrets masked.
    """
    values, problems = parse_each_variable(variables, environ, env_file)
    if problems:
        raise SettingsError(problems)
    return values


def parse_each_variable(variables: tuple[Var, ...], environ: Mapping[str, str] | None,
                        env_file: str | Path | None) -> tuple[dict[str, Any], list[str]]:
    """(values, problems): every variable parsed, a bad one at its default (so checks across
    variables can still run and be reported in the same run) with one problem line each."""
    environ = os.environ if environ is None else environ
    file_values = read_env_file(env_file) if env_file else {}
    values: dict[str, Any] = {}
    problems: list[str] = []
    for var in variables:
        raw = environ.get(var.name, file_values.get(var.name, var.default))
        try:
            values[var.attr] = var.parse(raw)
        except ValueError as exc:
            shown = MASK if var.secret else raw
            # A parser may explain the problem in a full sentence ("Invalid ...") instead of
            # naming what is expected.
            problems.append(f"{var.name}: {exc} (got {shown!r})" if str(exc).startswith("Invalid")
                            else f"{var.name} must be {exc}, got {shown!r}")
            values[var.attr] = var.parse(var.default)
    return values, problems


def masked_values(settings: Any, variables: tuple[Var, ...]) -> dict[str, Any]:
    """Every variable's value by name, with set secrets replaced by a mask."""
    values = {var.name: getattr(settings, var.attr) for var in variables}
    return {var.name: MASK if var.secret and values[var.name] else values[var.name] for var in variables}


_LINE = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*?)\s*$")


def read_env_file(path: str | Path) -> dict[str, str]:
    """Parse a .env file: KEY=VALUE lines, # comments, optional quotes and ``export``."""
    values: dict[str, str] = {}
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SettingsError([f"env file {str(path)!r} does not exist"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SettingsError([f"env file {str(path)!r} cannot be read: {exc}"]) from None
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = _LINE.match(line)
        if not match:
            raise SettingsError([f"env file {str(path)!r} line {number}: expected KEY=VALUE"])
        key, value = match.groups()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        elif " #" in value:
            value = value.split(" #", 1)[0].rstrip()
        values[key] = value
    return values


def env_file_or_default(env_file: str | Path | None) -> str | Path | None:
    """``env_file`` if given, else ``./.env`` when it exists (what the CLIs read)."""
    if env_file is None and Path(".env").is_file():
        return ".env"
    return env_file
