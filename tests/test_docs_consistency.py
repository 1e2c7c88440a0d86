"""The documentation cannot drift from the code.

README's configuration tables, ``.env.example`` and the route list are checked against the
settings tables (``msev15.config.VARIABLES`` and the escalation server's own) and against the
routes ``create_app`` registers. A failure names the variable or path and shows the expected
line, so fixing the docs is a copy and paste.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from msev15 import __version__
from msev15.app import create_app
from msev15.cli import main as cli_main
from msev15.common.env import read_env_file
from msev15.config import VARIABLES, Settings
from msev15.escalation.config import VARIABLES as ESCALATION_VARIABLES
from msev15.events.types import Token, ToolCalled, ToolFinished, TurnCompleted, TurnFailed, to_wire

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
ENV_EXAMPLE = ROOT / ".env.example"
CHANGELOG = ROOT / "CHANGELOG.md"
CONTRIBUTING = ROOT / "CONTRIBUTING.md"

ESCALATION_MARKER = "# EscalationComms MCP server (msev15 escalation-mcp)"
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*$")


def _text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def _section(markdown: str, title: str) -> str:
    """The text under the heading ``title`` up to the next heading of the same or a higher level.

    Fenced code blocks are skipped when looking for headings (``# comment`` lines in them are not
    headings).
    """
    lines = markdown.splitlines()
    start = level = None
    fenced = False
    for number, line in enumerate(lines):
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        match = None if fenced else _HEADING.match(line)
        if match is None:
            continue
        depth = len(match.group(1))
        if start is None:
            if match.group(2) == title:
                start, level = number + 1, depth
        elif depth <= level:  # type: ignore[operator]
            return "\n".join(lines[start:number])
    if start is None:
        raise AssertionError(f"README has no heading {title!r}")
    return "\n".join(lines[start:])


def _table_rows(markdown: str) -> dict[str, tuple[str, str]]:
    """``| `NAME` | default | meaning |`` rows, by name."""
    rows: dict[str, tuple[str, str]] = {}
    for line in markdown.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and re.fullmatch(r"`[A-Z][A-Z0-9_]*`", cells[0]):
            rows[cells[0].strip("`")] = (cells[1], cells[2])
    return rows


def _shown_default(default: str) -> str:
    return f"`{default}`" if default else "(empty)"


def _expected_row(name: str, default: str, doc: str) -> str:
    return f"| `{name}` | {_shown_default(default)} | {doc} |"


def _line_of(lines: list[str], line: str) -> int:
    assert line in lines, f".env.example has no line {line!r}"
    return lines.index(line)


def _env_example_parts() -> tuple[str, str]:
    text = _text(ENV_EXAMPLE)
    assert ESCALATION_MARKER in text, f".env.example needs the section header {ESCALATION_MARKER!r}"
    main, escalation = text.split(ESCALATION_MARKER, 1)
    return main, escalation


# --- .env.example -------------------------------------------------------------------------------


def test_env_example_sets_every_variable_to_its_default() -> None:
    values = read_env_file(ENV_EXAMPLE)
    for var in VARIABLES:
        assert var.name in values, f".env.example lacks {var.name}; add:\n# {var.doc}\n{var.name}={var.default}"
        assert values[var.name] == var.default, (
            f".env.example sets {var.name}={values[var.name]!r}; the default is {var.default!r}")


def test_env_example_sets_nothing_but_the_service_variables() -> None:
    # The escalation server's variables are commented out: HOST/PORT are not service settings.
    extra = sorted(set(read_env_file(ENV_EXAMPLE)) - {var.name for var in VARIABLES})
    assert extra == [], f".env.example sets names the service does not read: {extra}"


def test_env_example_changes_nothing() -> None:
    assert Settings.from_env({}, env_file=ENV_EXAMPLE) == Settings.from_env({}), (
        ".env.example must leave every setting at its default")


def test_env_example_explains_every_variable_on_the_line_before_it() -> None:
    lines = _env_example_parts()[0].splitlines()
    for var in VARIABLES:
        index = _line_of(lines, f"{var.name}={var.default}")
        assert lines[index - 1] == f"# {var.doc}", f".env.example: put '# {var.doc}' right above {var.name}"


def test_env_example_groups_variables_under_their_group_header() -> None:
    lines = _env_example_parts()[0].splitlines()
    for var in VARIABLES:
        index = _line_of(lines, f"{var.name}={var.default}")
        headers = [line for line in lines[:index] if line.startswith("# ") and line[2:] in
                   {v.group for v in VARIABLES}]
        assert headers and headers[-1] == f"# {var.group}", f".env.example: {var.name} belongs under '# {var.group}'"


def test_env_example_lists_the_escalation_variables_commented_out() -> None:
    section = _env_example_parts()[1].splitlines()
    for var in ESCALATION_VARIABLES:
        line = f"# {var.name}={var.default}"
        assert line in section, f".env.example's escalation section lacks:\n# {var.doc}\n{line}"
        assert section[_line_of(section, line) - 1] == f"# {var.doc}", (
            f".env.example: put '# {var.doc}' right above '{line}'")


# --- README ---------------------------------------------------------------------------------------


def test_readme_quick_start_shows_make_run_and_make_test() -> None:
    quick_start = _section(_text(README), "Quick start")
    for command in ("make run", "make test"):
        assert re.search(rf"^{command}\b", quick_start, re.M), f"README's quick start must show `{command}`"


def test_readme_configuration_table_lists_every_variable_with_its_default() -> None:
    rows = _table_rows(_section(_text(README), "Configuration"))
    for var in VARIABLES:
        expected = _expected_row(var.name, var.default, var.doc)
        assert var.name in rows, f"README's configuration table lacks {var.name}; add:\n{expected}"
        shown, meaning = rows[var.name]
        assert shown == _shown_default(var.default), f"README shows {var.name} default {shown}; expected:\n{expected}"
        assert var.doc in meaning, f"README's meaning of {var.name} must include {var.doc!r}; expected:\n{expected}"


def test_readme_configuration_table_lists_nothing_else() -> None:
    rows = _table_rows(_section(_text(README), "Configuration"))
    extra = sorted(set(rows) - {var.name for var in VARIABLES})
    assert extra == [], f"README documents variables the service does not have: {extra}"


def test_readme_lists_every_escalation_variable_with_its_default() -> None:
    rows = _table_rows(_section(_text(README), "EscalationComms settings"))
    extra = sorted(set(rows) - {var.name for var in ESCALATION_VARIABLES})
    assert extra == [], f"README documents escalation variables that do not exist: {extra}"
    for var in ESCALATION_VARIABLES:
        expected = _expected_row(var.name, var.default, var.doc)
        assert var.name in rows, f"README's escalation table lacks {var.name}; add:\n{expected}"
        shown, meaning = rows[var.name]
        assert shown == _shown_default(var.default), f"README shows {var.name} default {shown}; expected:\n{expected}"
        assert var.doc in meaning, f"README's meaning of {var.name} must include {var.doc!r}; expected:\n{expected}"


async def test_readme_mentions_every_registered_route(tmp_path: Path) -> None:
    settings = Settings.defaults(mcp_server_url="", log_to_file=False, order_db_path=str(tmp_path / "orders.db"))
    app = await create_app(settings)
    paths = {route.resource.canonical for route in app.router.routes() if route.resource is not None}
    assert "/api/v1/chat/stream" in paths  # the walk found the real routes
    readme = _text(README)
    missing = sorted(p for p in paths if p not in readme)
    assert missing == [], f"README does not mention these routes: {missing}"


def test_readme_shows_every_sse_event_type() -> None:
    ids = ("turn", "tenant", "session", "request")
    events = [Token(*ids, "Hi"), ToolCalled(*ids, "get_order_by_id", "c1"),
              ToolFinished(*ids, "get_order_by_id", "c1", True), TurnCompleted(*ids, "Hi", 2),
              TurnFailed(*ids, "llm_error", "failed")]
    readme = _text(README)
    for event in events:
        wire = to_wire(event)
        assert wire is not None
        assert f'data: {{"type": "{wire["type"]}"' in readme, f"README shows no {wire['type']!r} SSE event"


def test_readme_documents_every_cli_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli_main(["--help"])
    assert exited.value.code == 0
    choices = re.search(r"\{([a-z-]+(?:,[a-z-]+)+)\}", capsys.readouterr().out)
    assert choices is not None, "msev15 --help lists no commands"
    readme = _text(README)
    for command in choices.group(1).split(","):
        assert f"msev15 {command}" in readme, f"README does not document `msev15 {command}`"


def test_readme_links_contributing_and_changelog() -> None:
    readme = _text(README)
    assert "(CONTRIBUTING.md)" in readme
    assert "(CHANGELOG.md)" in readme


# --- CHANGELOG and CONTRIBUTING -------------------------------------------------------------------


def test_changelog_has_a_section_for_the_current_version() -> None:
    changelog = _text(CHANGELOG)
    assert "Keep a Changelog" in changelog
    assert re.search(rf"^## \[{re.escape(__version__)}\] - \d{{4}}-\d{{2}}-\d{{2}}$", changelog, re.M), (
        f"CHANGELOG.md needs a '## [{__version__}] - YYYY-MM-DD' section")
    assert re.search(r"^## \[0\.1\.0\]", changelog, re.M)


def test_contributing_names_the_team() -> None:
    contributing = _text(CONTRIBUTING)
    for person, role in (("Hemanth Shah", "Product Manager"), ("Ramkumar", "Development"), ("Rahul", "Development")):
        assert re.search(rf"{person}\s*\|\s*{role}", contributing), f"CONTRIBUTING.md must name {person} ({role})"
