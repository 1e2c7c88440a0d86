"""The import graph of ``msev15/``: no circle between files and no import up the layers.

Every import counts, type-only and function-level ones included (a deferred import is still a
dependency, and a type-only one still ties the two files together for a reader). The layers,
lowest first; a module may import its own layer or any lower one:

- the package's face (``__init__``: the version), ``common``, ``mcpkit`` and the log writer,
  then the two MCP programs (``complaints``, ``escalation``), which ``test_import_boundaries``
  keeps apart from the service;
- ``config`` (the service's settings) and the service's log context;
- ``store`` (sessions, orders, API keys, limits), ``events`` (bus, types, turn log, log and metric
  subscribers), ``agent`` (runner, tools, providers, MCP client);
- ``topology`` (which backends run), then ``handlers`` (routes and protocol translators);
- ``server`` (connections, serving until a signal), then the assembly (``app``, ``banner``,
  ``supervisor``, then ``cli`` and ``__main__``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import msev15
from tests.test_import_boundaries import msev15_imports

PACKAGE_ROOT = Path(msev15.__file__).parent

LAYERS: tuple[tuple[str, ...], ...] = (
    ("msev15", "msev15.common", "msev15.mcpkit", "msev15.logs", "msev15.logs.writer", "msev15.logs.repeat"),
    ("msev15.complaints", "msev15.escalation"),
    ("msev15.config", "msev15.logs.service"),
    ("msev15.store",),
    ("msev15.events", "msev15.logs.subscriber"),
    ("msev15.agent",),
    ("msev15.topology_stores",),
    ("msev15.topology",),
    ("msev15.handlers",),
    ("msev15.server",),
    ("msev15.app", "msev15.banner", "msev15.supervisor"),
    ("msev15.cli", "msev15.apikeys_cli", "msev15.profiles_cli", "msev15.evals"),
    ("msev15.__main__",),
)


def module_name(path: Path, root: Path = PACKAGE_ROOT) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, modules: set[str], root: Path = PACKAGE_ROOT) -> Iterator[tuple[int, str]]:
    """(line, module of this tree) for every import in ``path``: each imported name read as the
    longest module of the tree that it names or lies in."""
    me = module_name(path, root)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    for line, target in msev15_imports(path.read_text(encoding="utf-8"), package):
        while target and target not in modules:
            target = target.rpartition(".")[0]
        if target and target != me:
            yield line, target


def layer_of(module: str) -> int:
    best, found = -1, -1
    for index, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            # The root package is a layer by itself only: its sub-modules each name their own.
            matches = module == prefix or (prefix != "msev15" and module.startswith(prefix + "."))
            if matches and len(prefix) > best:
                best, found = len(prefix), index
    assert found >= 0, f"{module} is in no layer: add it to LAYERS"
    return found


def graph(root: Path = PACKAGE_ROOT) -> dict[str, dict[str, int]]:
    """module -> {imported module: first line}."""
    paths = {module_name(p, root): p for p in sorted(root.rglob("*.py"))}
    modules = set(paths)
    edges: dict[str, dict[str, int]] = {}
    for name, path in paths.items():
        edges[name] = {}
        for line, target in imports_of(path, modules, root):
            edges[name].setdefault(target, line)
    return edges


def upward_imports(edges: dict[str, dict[str, int]]) -> list[str]:
    return [f"{src}:{line} imports {dst}" for src, targets in edges.items() for dst, line in targets.items()
            if layer_of(dst) > layer_of(src)]


def circles(edges: dict[str, dict[str, int]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in edges.get(node, {}):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_no_import_circles() -> None:
    assert circles(graph()) == []


def test_no_import_runs_up_the_layers() -> None:
    assert upward_imports(graph()) == []


def test_the_checks_catch_a_circle_and_an_upward_import(tmp_path: Path) -> None:
    """The walker itself: a package with a circle and an upward import is flagged, type-only and
    deferred imports included."""
    pkg = tmp_path / "msev15"
    (pkg / "store").mkdir(parents=True)
    (pkg / "agent").mkdir()
    for init in (pkg / "__init__.py", pkg / "store" / "__init__.py", pkg / "agent" / "__init__.py"):
        init.write_text("")
    (pkg / "store" / "a.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from msev15.agent.b import B\n")
    (pkg / "agent" / "b.py").write_text("def f():\n    from msev15.store import a\n    return a\n")
    edges = graph(pkg)
    assert circles(edges) == [["msev15.agent.b", "msev15.store.a"]]
    assert upward_imports(edges) == ["msev15.store.a:3 imports msev15.agent.b"]
