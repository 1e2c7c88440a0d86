"""``msev15 eval``: pass^k, invalid files with their lines, and real runs of the CLI against a
running service (exit codes, the report) and of the shipped suite against the offline assistant."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from msev15.app import create_app
from msev15.evals.checks import pass_hat_k
from msev15.evals.scenario import ScenarioError, load, schema
from tests.conftest import make_settings

REPO = Path(__file__).resolve().parent.parent
SUITE = REPO / "evals"
RUN_SECONDS = 240.0

PASSING = """\
name: an unknown order is reported
turns:
  - user: "Where is order ORD-ZZZZZZZZ?"
    expect:
      tool_calls: [{name: get_order_by_id, arguments: {order_id: ord-zzzzzzzz}}]
      reply_contains: ["ORD-ZZZZZZZZ"]
"""
FAILING = """\
name: expects what the assistant does not do
trials: 3
turns:
  - user: "hello"
    expect:
      reply_contains: ["how can i help"]
  - user: "Where is order ORD-ZZZZZZZZ?"
    expect:
      tool_calls: [{name: get_order_by_id, arguments: {order_id: ORD-00000000}}]
      no_tool_calls: [get_order_by_id]
"""


async def _eval(*args: str, cwd: Path, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "msev15", "eval", *args, cwd=cwd, env={**os.environ, **(env or {})},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), RUN_SECONDS)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_pass_hat_k_is_the_unbiased_estimator() -> None:
    assert pass_hat_k(3, 3) == {"1": 1.0, "2": 1.0, "3": 1.0}
    assert pass_hat_k(3, 0) == {"1": 0.0, "2": 0.0, "3": 0.0}
    assert pass_hat_k(4, 2) == {"1": 0.5, "2": 1 / 6, "3": 0.0, "4": 0.0}
    hats = pass_hat_k(10, 7)
    assert hats["1"] == 0.7 and hats["3"] == pytest.approx(35 / 120) and hats["8"] == 0.0


@pytest.mark.parametrize(("text", "line", "problem"), [
    ("name: x\nturns:\n  - user: [unclosed\n", 4, "not valid YAML"),
    ("name: x\nturns:\n  - user: hi\n    expect:\n      reply_contain: [a]\n", 5, "reply_contain"),
    ("name: x\nturns:\n  - user: hi\n  - user: there\n    expect: {status: done}\n", 5, "status"),
    ("name: x\nturns:\n  - user: hi\n    expect:\n      reply_matches: '(unclosed'\n", 5, "regular expression"),
    ("name: x\ntrials: 0\nturns:\n  - user: hi\n", 2, "trials"),
    ("name: x\n", 1, "'turns' is a required property"),
    ("", 1, "empty"),
])
def test_invalid_files_name_the_line_and_the_problem(tmp_path: Path, text: str, line: int, problem: str) -> None:
    path = _write(tmp_path, "bad.yaml", text)
    with pytest.raises(ScenarioError) as caught:
        load(path)
    assert caught.value.line == line, str(caught.value)
    assert problem in caught.value.problem
    assert str(caught.value).startswith(f"{path}:{line}: ")


def test_every_shipped_scenario_is_valid_and_the_suite_covers_the_areas() -> None:
    assert schema()["title"] == "msev15 eval scenario"
    scenarios = [load(p) for p in sorted(SUITE.glob("*.yaml"))]
    assert len(scenarios) >= 15
    tools = {c["name"] for s in scenarios for t in s.turns for c in t.expect.get("tool_calls", [])}
    assert {"get_order_by_id", "create_order", "register_complaint", "send_email", "sendemail"} <= tools
    assert any(t.decide is not None for s in scenarios for t in s.turns)  # approvals are exercised
    assert {t.expect.get("status") for s in scenarios for t in s.turns} >= {"waiting", "completed"}


async def test_invalid_file_exits_2_with_file_and_line(tmp_path: Path) -> None:
    good = _write(tmp_path, "good.yaml", PASSING)
    bad = _write(tmp_path, "bad.yaml", "name: x\nturns:\n  - user: hi\n    expect: {tool_calls: [{arguments: {}}]}\n")
    code, out, err = await _eval(str(good), str(bad), "--url", "http://127.0.0.1:9", cwd=tmp_path)
    assert code == 2, (out, err)
    assert f"{bad}:4: " in err and "'name' is a required property" in err
    assert out == "", "nothing runs when a file is invalid"


async def test_passing_and_failing_scenarios_against_a_running_service(aiohttp_server: Any, tmp_path: Path) -> None:
    server = await aiohttp_server(await create_app(make_settings(tmp_path)))
    url = str(server.make_url("/"))
    passing = _write(tmp_path, "passing.yaml", PASSING)
    failing = _write(tmp_path, "failing.yaml", FAILING)
    report = tmp_path / "report.json"

    code, out, err = await _eval(str(passing), "--url", url, "--trials", "2", cwd=tmp_path)
    assert code == 0, (out, err)
    assert "PASS  2/2  pass^1=1.00 pass^2=1.00  an unknown order is reported" in out

    code, out, err = await _eval(str(passing), str(failing), "--url", url, "--tenant", "acme", "--report",
                                 str(report), cwd=tmp_path)
    assert code == 1, (out, err)
    assert "FAIL  0/3" in out and "trial 2, turn 2: expected tool_calls: get_order_by_id" in out
    results = json.loads(report.read_text())
    assert (results["passed"], results["failed"]) == (1, 1)
    ok, bad = results["scenarios"]
    assert (ok["name"], ok["trials"], ok["passed"], ok["pass_hat_k"], ok["failures"]) == (
        "an unknown order is reported", 1, 1, {"1": 1.0}, [])
    assert (bad["trials"], bad["passed"], bad["pass_hat_k"]) == (3, 0, {"1": 0.0, "2": 0.0, "3": 0.0})
    assert [(f["trial"], f["turn"]) for f in bad["failures"]] == [(t, 2) for t in (1, 1, 2, 2, 3, 3)]
    first, second = bad["failures"][:2]
    assert first["expectation"] == 'tool_calls: get_order_by_id {"order_id": "ORD-00000000"}'
    assert first["got"] == 'get_order_by_id {"order_id": "ORD-ZZZZZZZZ"}'
    assert second["expectation"] == "no_tool_calls: get_order_by_id"


@pytest.mark.subprocess
async def test_the_shipped_suite_passes_with_the_offline_assistant(tmp_path: Path) -> None:
    """What ``make test`` runs: every scenario in evals/ against this service built in-process
    (the offline assistant, demo orders, the outbox) with the reference MCP servers."""
    env = {"LLM_PROVIDER": "offline", "ORDER_DB_PATH": str(tmp_path / "orders.db"), "ORDER_DB_SEED": "true",
           "EMAIL_OUTBOX_DIR": str(tmp_path / "outbox"), "COMPLAINTS_DB_PATH": str(tmp_path / "complaints.db"),
           "SESSION_STORE": "memory", "LOG_LEVEL": "WARNING", "LOG_TO_FILE": "false", "SMTP_SERVER": "",
           "AUTH_MODE": "none", "MCP_SERVER_URL": "", "ESCALATION_MCP_URL": "",
           "TOOL_APPROVAL": "update_order_status"}  # the approval scenarios' rule
    report = tmp_path / "suite.json"
    code, out, err = await _eval(str(SUITE), "--with-reference-servers", "--report", str(report), cwd=tmp_path,
                                 env=env)
    assert code == 0, out + err
    results = json.loads(report.read_text())
    assert results["failed"] == 0 and results["passed"] >= 15


@pytest.mark.subprocess
async def test_the_readmes_example_scenario_passes(tmp_path: Path) -> None:
    """The scenario the README shows (section "Conversation tests") runs green as documented."""
    readme = (REPO / "README.md").read_text()
    start = readme.index("```yaml\nname: a cancellation waits for approval, then runs\n") + len("```yaml\n")
    example = _write(tmp_path, "example.yaml", readme[start:readme.index("```", start)])
    env = {"LLM_PROVIDER": "offline", "ORDER_DB_PATH": str(tmp_path / "orders.db"), "ORDER_DB_SEED": "true",
           "SESSION_STORE": "memory", "LOG_LEVEL": "WARNING", "LOG_TO_FILE": "false", "SMTP_SERVER": "",
           "AUTH_MODE": "none", "MCP_SERVER_URL": "", "ESCALATION_MCP_URL": "",
           "TOOL_APPROVAL": "update_order_status"}
    code, out, err = await _eval(str(example), cwd=tmp_path, env=env)
    assert code == 0, out + err
    assert "PASS  3/3" in out, out


DECIDING = """\
name: a decision reaches the continuation
turns:
  - user: "Cancel order ORD-ZZZZZZZZ"
    expect: {status: waiting, pending: [update_order_status]}
  - decide: {approve: false, reason: "not now"}
    expect: {status: completed, reply_contains: ["not now"], no_tool_calls: [update_order_status]}
"""
APPROVING = """\
name: an approved call counts as made in the continuation
turns:
  - user: "Cancel order ORD-ZZZZZZZZ"
    expect: {status: waiting, pending: [update_order_status]}
  - decide: {approve: true}
    expect: {tool_calls: [{name: update_order_status, arguments: {order_id: ORD-ZZZZZZZZ}}]}
"""
NOTHING_TO_DECIDE = """\
name: a decision with nothing pending
turns:
  - user: "hello"
  - decide: {approve: true}
"""


async def test_a_decide_step_answers_the_waiting_calls_and_checks_the_continuation(
        aiohttp_server: Any, tmp_path: Path) -> None:
    server = await aiohttp_server(await create_app(make_settings(tmp_path, tool_approval=("update_order_status",))))
    url = str(server.make_url("/"))
    deciding = _write(tmp_path, "deciding.yaml", DECIDING)
    approving = _write(tmp_path, "approving.yaml", APPROVING)
    nothing = _write(tmp_path, "nothing.yaml", NOTHING_TO_DECIDE)
    report = tmp_path / "report.json"
    code, out, err = await _eval(str(deciding), str(approving), str(nothing), "--url", url, "--report", str(report),
                                 cwd=tmp_path)
    assert code == 1, (out, err)
    results = {s["name"]: s for s in json.loads(report.read_text())["scenarios"]}
    reached = results["a decision reaches the continuation"]
    assert reached["passed"] == 1, reached["failures"]
    assert results["an approved call counts as made in the continuation"]["passed"] == 1, results
    [failure] = results["a decision with nothing pending"]["failures"]
    assert (failure["turn"], failure["expectation"], failure["got"]) == (2, "decide", "no pending calls")
