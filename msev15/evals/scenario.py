"""Scenario files of ``msev15 eval``: YAML, checked against the shipped JSON Schema.

A problem in a file is reported as ``file:line: problem`` (:class:`ScenarioError`), the line found
from the YAML node the schema error points at, so an author can jump to it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import yaml

SCHEMA_FILE = "scenario.schema.json"


def schema() -> dict[str, Any]:
    """The scenario format (shipped with the package, for editors too)."""
    return dict(json.loads(resources.files("msev15.evals").joinpath(SCHEMA_FILE).read_text(encoding="utf-8")))


class ScenarioError(Exception):
    """An invalid scenario file: ``str()`` is ``path:line: problem``."""

    def __init__(self, path: Path, line: int, problem: str) -> None:
        super().__init__(f"{path}:{line}: {problem}")
        self.path = path
        self.line = line
        self.problem = problem


@dataclass(frozen=True)
class Turn:
    user: str | None  # a message, or
    decide: dict[str, Any] | None  # a decision on the previous turn's pending calls
    expect: dict[str, Any] = field(default_factory=dict)
    line: int = 0


@dataclass(frozen=True)
class Scenario:
    name: str
    path: Path
    trials: int
    turns: tuple[Turn, ...]
    tenant: str | None = None


def _line_of(node: yaml.Node, path: list[str | int]) -> int:
    """The 1-based line of the node at ``path`` (the deepest one that exists)."""
    for step in path:
        if isinstance(node, yaml.MappingNode) and isinstance(step, str):
            match = next((value for key, value in node.value if getattr(key, "value", None) == step), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(step, int) and step < len(node.value):
            match = node.value[step]
        else:
            match = None
        if match is None:
            break
        node = match
    return node.start_mark.line + 1


def _problem(error: jsonschema.ValidationError) -> str:
    where = "/".join(str(p) for p in error.absolute_path)
    return f"{where}: {error.message}" if where else error.message


def load(path: Path) -> Scenario:
    """Read and check one scenario file. Raises :class:`ScenarioError`."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ScenarioError(path, 1, f"cannot read: {exc}") from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        raise ScenarioError(path, mark.line + 1 if mark else 1, f"not valid YAML: {exc.problem}") from None
    if node is None:
        raise ScenarioError(path, 1, "the file is empty")
    validator = jsonschema.Draft202012Validator(schema())
    errors = sorted(validator.iter_errors(data), key=lambda e: (list(map(str, e.absolute_path)), e.message))
    if errors:
        first = min(errors, key=lambda e: _line_of(node, list(e.absolute_path)))
        raise ScenarioError(path, _line_of(node, list(first.absolute_path)), _problem(first))
    turns = []
    for index, raw in enumerate(data["turns"]):
        expect = raw.get("expect") or {}
        pattern = expect.get("reply_matches")
        if pattern is not None:
            try:
                re.compile(pattern)
            except re.error as exc:
                line = _line_of(node, ["turns", index, "expect", "reply_matches"])
                raise ScenarioError(path, line, f"turns/{index}/expect/reply_matches: not a valid regular "
                                                f"expression: {exc}") from None
        turns.append(Turn(raw.get("user"), raw.get("decide"), expect, _line_of(node, ["turns", index])))
    return Scenario(data["name"], path, int(data.get("trials", 1)), tuple(turns), data.get("tenant"))


def files(paths: list[str]) -> list[Path]:
    """The scenario files named: files as given, folders searched for *.yaml and *.yml (sorted)."""
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found.extend(sorted(p for p in path.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file()))
        else:
            found.append(path)
    return found
