"""Running scenarios: every trial in a fresh session, then pass^k per scenario and a report.

Against ``--url`` (any deployment, any model behind it) or, without one, against the service
built in this process from the current settings, on a loopback port, with the reference MCP
servers when asked (``--with-reference-servers``), exactly as ``msev15 serve`` would run it.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from msev15.evals.checks import Miss, check, pass_hat_k
from msev15.evals.client import EvalClient, TurnResult
from msev15.evals.scenario import Scenario


@dataclass
class Failure:
    trial: int
    turn: int  # 1-based
    expectation: str
    got: str


@dataclass
class Outcome:
    scenario: Scenario
    trials: int
    passed: int = 0
    failures: list[Failure] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.scenario.name, "file": str(self.scenario.path), "trials": self.trials,
                "passed": self.passed, "pass_hat_k": pass_hat_k(self.trials, self.passed),
                "failures": [f.__dict__ for f in self.failures]}


async def run_trial(client: EvalClient, scenario: Scenario, trial: int) -> list[Failure]:
    """One trial in a fresh session; stops at the first turn that misses (later turns would
    build on an answer that was already wrong)."""
    session = f"eval-{secrets.token_hex(6)}"
    previous: TurnResult | None = None
    for index, turn in enumerate(scenario.turns, start=1):
        if turn.user is None:  # a decision on every pending call of the previous turn
            if previous is None or not previous.waiting:
                return [Failure(trial, index, "decide", "no pending calls")]
            result = await client.decide(session, previous.waiting, turn.decide or {}, scenario.tenant)
        else:
            result = await client.say(session, turn.user, scenario.tenant)
        misses: list[Miss] = check(turn.expect, result)
        if misses:
            return [Failure(trial, index, m.expectation, m.got) for m in misses]
        previous = result
    return []


async def run_scenario(client: EvalClient, scenario: Scenario, trials: int) -> Outcome:
    outcome = Outcome(scenario, trials)
    for trial in range(1, trials + 1):
        failures = await run_trial(client, scenario, trial)
        if failures:
            outcome.failures.extend(failures)
        else:
            outcome.passed += 1
    return outcome


def table(outcomes: list[Outcome], out: TextIO) -> None:
    """One line per scenario: trials passed and pass^k; then each failure."""
    for outcome in outcomes:
        hats = " ".join(f"pass^{k}={v:.2f}" for k, v in pass_hat_k(outcome.trials, outcome.passed).items())
        mark = "PASS" if outcome.passed == outcome.trials else "FAIL"
        out.write(f"{mark}  {outcome.passed}/{outcome.trials}  {hats}  {outcome.scenario.name}"
                  f"  ({outcome.scenario.path})\n")
        for failure in outcome.failures:
            out.write(f"      trial {failure.trial}, turn {failure.turn}: expected {failure.expectation}; "
                      f"got {failure.got}\n")
    failed = sum(o.passed < o.trials for o in outcomes)
    out.write(f"\n{len(outcomes) - failed} of {len(outcomes)} scenarios passed every trial.\n")


def report(outcomes: list[Outcome], path: Path) -> None:
    failed = sum(o.passed < o.trials for o in outcomes)
    path.write_text(json.dumps({"scenarios": [o.to_dict() for o in outcomes], "passed": len(outcomes) - failed,
                                "failed": failed}, indent=2) + "\n", encoding="utf-8")


@asynccontextmanager
async def in_process_service(with_reference_servers: bool) -> AsyncIterator[str]:
    """The service on the current settings, on a free loopback port; yields its base URL."""
    from aiohttp import web

    from msev15.app import create_app
    from msev15.config import load_settings
    from msev15.supervisor import Supervisor

    settings = load_settings(None).replace(server_host="127.0.0.1", server_port=0)
    supervisor = Supervisor(token=settings.mcp_auth_token) if with_reference_servers else None
    if supervisor is not None:
        await supervisor.start()
        settings = supervisor.settings(settings)
    runner: web.AppRunner | None = None
    try:
        runner = web.AppRunner(await create_app(settings), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        await _wait_for_mcp(runner.app)
        yield f"http://127.0.0.1:{port}"
    finally:
        if runner is not None:
            await runner.cleanup()
        if supervisor is not None:
            await supervisor.stop()


async def _wait_for_mcp(app: Any, timeout: float = 15.0) -> None:
    """MCP servers connect in the background: a scenario about complaints should not race them."""
    from msev15.agent.context import MCP

    for connection in app[MCP].values():
        await connection.wait_connected(timeout)
