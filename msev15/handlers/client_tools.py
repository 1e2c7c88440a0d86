"""Client tools: tools a caller declares in a request and runs itself (issue 23, rule 6).

They are offered to the model for that turn and its continuations; a call of one always waits
for the client's output (``POST .../pending/{call_id}`` with ``{"output": ...}``, or the
protocol's own way). Each is ``{"name", "description", "parameters"}``: a name of
``^[A-Za-z0-9_-]{1,64}$`` that no server tool has, a description, and a JSON Schema object for
the arguments; at most 32. Anything else is a 400 naming the field. A name declared twice is used
once, as first declared (every model API refuses two tools of one name).
"""

from __future__ import annotations

import re
from collections.abc import Collection
from typing import Any

import jsonschema

from msev15.events.types import ClientTool
from msev15.handlers.validation import invalid
from msev15.store.base import storable

MAX_CLIENT_TOOLS = 32
MAX_DESCRIPTION_CHARS = 2000
_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_FIELDS = frozenset({"name", "description", "parameters"})


def client_tools(raw: Any, server_tools: Collection[str], field: str = "tools") -> tuple[ClientTool, ...]:
    """The declared tools, checked; ``()`` when ``raw`` is None."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise invalid(f"{field} must be an array of tools", field)
    if len(raw) > MAX_CLIENT_TOOLS:
        raise invalid(f"{field} may declare at most {MAX_CLIENT_TOOLS} tools", field)
    tools: list[ClientTool] = []
    for i, item in enumerate(raw):
        at = f"{field}[{i}]"
        if not isinstance(item, dict):
            raise invalid(f"{at} must be an object with name, description and parameters", at)
        unknown = sorted(set(item) - _FIELDS)
        if unknown:
            raise invalid(f"unknown field {unknown[0]!r} in {at}; allowed: name, description, parameters",
                          f"{at}.{unknown[0]}")
        name = item.get("name")
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise invalid(f"{at}.name must match ^[A-Za-z0-9_-]{{1,64}}$", f"{at}.name")
        if name in server_tools:
            raise invalid(f"{at}.name {name!r} is the name of one of the service's own tools", f"{at}.name")
        if any(t.name == name for t in tools):
            continue  # declared twice: used once, as first declared (the model sees each name once)
        description = item.get("description", "")
        if not isinstance(description, str) or len(description) > MAX_DESCRIPTION_CHARS:
            raise invalid(f"{at}.description must be a string of at most {MAX_DESCRIPTION_CHARS} characters",
                          f"{at}.description")
        parameters = item.get("parameters")
        if not isinstance(parameters, dict) or parameters.get("type", "object") != "object":
            raise invalid(f"{at}.parameters must be a JSON Schema object (type: object)", f"{at}.parameters")
        try:
            jsonschema.Draft202012Validator.check_schema(parameters)
        except jsonschema.SchemaError as exc:
            raise invalid(f"{at}.parameters is not a valid JSON Schema: {exc.message}"[:300],
                          f"{at}.parameters") from None
        # A lone surrogate is valid JSON but no store or model API takes it (see store.base.storable).
        tools.append(ClientTool(name, storable(description), storable({"type": "object", **parameters})))
    return tuple(tools)
