"""``msev15 eval PATH… [--url URL] [--api-key KEY] [--tenant T] [--trials K] [--report FILE.json]``.

Exit codes: 0 when every trial of every scenario passed, 1 when any failed (or the service could
not be reached), 2 for an invalid scenario file (``file:line: problem`` on stderr).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

from msev15.evals.client import EvalClient
from msev15.evals.runner import Outcome, in_process_service, report, run_scenario, table
from msev15.evals.scenario import Scenario, ScenarioError, files, load


def _trials(raw: str) -> int:
    value = int(raw)
    if not 1 <= value <= 100:
        raise argparse.ArgumentTypeError("must be between 1 and 100")
    return value


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "eval", help="run conversation tests (scenario files) and report pass^k",
        description="Run YAML conversation scenarios, each trial in a fresh session, against --url or, "
                    "without it, against this service built in-process from the current settings. "
                    "Exit 0 when every trial passed, 1 when any failed, 2 for an invalid scenario file.")
    parser.add_argument("paths", nargs="+", metavar="PATH", help="scenario files or folders of *.yaml")
    parser.add_argument("--url", help="the service's base URL (default: an in-process service)")
    parser.add_argument("--api-key", help="an API key, sent as a bearer token")
    parser.add_argument("--tenant", help="the tenant_id to send (a scenario's own 'tenant' wins)")
    parser.add_argument("--trials", type=_trials, help="trials per scenario (overrides each file's 'trials')")
    parser.add_argument("--report", type=Path, metavar="FILE.json", help="also write the results as JSON")
    parser.add_argument("--with-reference-servers", action="store_true",
                        help="in-process only: also run the reference complaints and escalation MCP servers")


async def _run(args: argparse.Namespace, scenarios: list[Scenario]) -> list[Outcome]:
    async def against(url: str) -> list[Outcome]:
        async with EvalClient(url, api_key=args.api_key, tenant=args.tenant) as client:
            return [await run_scenario(client, s, args.trials or s.trials) for s in scenarios]

    if args.url:
        return await against(args.url)
    async with in_process_service(args.with_reference_servers) as url:
        return await against(url)


def eval_command(args: argparse.Namespace) -> int:
    try:
        scenarios = [load(path) for path in files(args.paths)]
    except ScenarioError as exc:
        print(f"msev15 eval: invalid scenario: {exc}", file=sys.stderr)
        return 2
    if not scenarios:
        print("msev15 eval: no scenario files found in " + ", ".join(args.paths), file=sys.stderr)
        return 2
    outcomes = asyncio.run(_run(args, scenarios))
    table(outcomes, sys.stdout)
    if args.report is not None:
        report(outcomes, args.report)
    return 0 if all(o.passed == o.trials for o in outcomes) else 1
