"""``msev15 profile show | set FILE | history | rollback N | delete --tenant T``: a tenant's agent profile.

Opens the same store as the service (``topology.profile_store``: Redis with SESSION_STORE=redis,
else the API keys SQLite file), so a change here is used by the next turn of every running
instance. ``set`` reads YAML or JSON (``.json`` as JSON, anything else as YAML: safe loading,
no aliases, so a small file cannot expand into a huge one). ``show`` prints the profile as JSON
with inline header values masked as ``***``; ``set`` refuses ``***`` as a value, so showing,
editing and setting again cannot store the mask over a secret.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from msev15.common.tenancy import TenantIdError, check_tenant
from msev15.config import command_settings
from msev15.store.profile_model import MAX_PROFILE_BYTES, ProfileInvalid, masked
from msev15.store.profiles import ProfileStore, VersionConflict
from msev15.topology import profile_store

MAX_FILE_BYTES = 4 * MAX_PROFILE_BYTES  # YAML is wordier than the JSON it becomes


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    profile = commands.add_parser("profile", help="show, set, list or roll back a tenant's agent profile")
    profile.add_argument("--env-file", help="read settings from this file (default: ./.env if present)")
    actions = profile.add_subparsers(dest="action", required=True)

    def action(name: str, help_: str) -> argparse.ArgumentParser:
        sub = actions.add_parser(name, help=help_)
        sub.add_argument("--tenant", required=True, help="the tenant whose profile this is")
        return sub

    action("show", help_="print the current profile as JSON (inline header values masked)")
    put = action("set", help_="store FILE (YAML or JSON) as the next version and make it current")
    put.add_argument("file", type=Path)
    put.add_argument("--if-version", type=int, help="only while this version is current (0: while none is)")
    action("history", help_="list the kept versions, newest first (* marks the current one)")
    back = action("rollback", help_="make version N current again, as a new version")
    back.add_argument("version", type=int)
    action("delete", help_="go back to the service's defaults (the history is kept)")


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class _NoAliases(yaml.SafeLoader):
    """SafeLoader without anchors and aliases: a few lines of them can expand exponentially."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()  # type: ignore[no-untyped-call]
            raise yaml.constructor.ConstructorError(None, None, "aliases are not allowed", event.start_mark)
        return super().compose_node(parent, index)


def read_profile(path: Path) -> dict[str, Any]:
    """The profile in ``path``; ValueError with a reason to print."""
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            raise ValueError(f"{path} is over {MAX_FILE_BYTES:,} bytes")
        raw = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read {path}: {exc}") from None
    try:
        data = json.loads(raw) if path.suffix.lower() == ".json" else yaml.load(raw, Loader=_NoAliases)
    except (ValueError, yaml.YAMLError) as exc:
        raise ValueError(f"{path} is not valid {'JSON' if path.suffix.lower() == '.json' else 'YAML'}: "
                         f"{str(exc)[:300]}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold one object (a mapping of fields), not {type(data).__name__}")
    return data


def _by() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (OSError, KeyError):
        return "cli"


async def _run(store: ProfileStore, args: argparse.Namespace, profile: dict[str, Any] | None) -> int:
    tenant = args.tenant
    try:
        if args.action == "show":
            record = await store.current(tenant)
            if record is None:
                print(f"Tenant {tenant} has no profile: its agent uses the service's defaults.", file=sys.stderr)
                return 1
            print(f"# version {record.version}, {_when(record.updated_at)} by {record.updated_by}", file=sys.stderr)
            print(json.dumps(masked(record.profile), indent=2, ensure_ascii=False))
            return 0
        if args.action == "set":
            assert profile is not None
            n = await store.put(tenant, profile, _by(), if_version=args.if_version)
            print(f"Stored version {n} of tenant {tenant}'s profile; turns that start now use it.")
            return 0
        if args.action == "history":
            current = await store.current_version(tenant)
            print(f"  {'VERSION':>7}  {'UPDATED':<20}  BY")
            for r in await store.versions(tenant):
                mark = "*" if r.version == current else " "
                print(f"{mark} {r.version:>7}  {_when(r.updated_at):<20}  {r.updated_by}")
            return 0
        if args.action == "rollback":
            try:
                n = await store.rollback(tenant, args.version, _by())
            except LookupError:
                print(f"error: tenant {tenant} has no version {args.version}", file=sys.stderr)
                return 1
            print(f"Version {n} of tenant {tenant}'s profile is version {args.version} again.")
            return 0
        deleted = await store.delete(tenant, _by())
        print(f"Tenant {tenant} uses the service's defaults{'' if deleted else ' (it had no profile)'}.")
        return 0
    except ProfileInvalid as exc:
        print(f"error: the profile is invalid ({len(exc.problems)} problems):", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem['field']}: {problem['message']}", file=sys.stderr)
        return 1
    except VersionConflict as exc:
        print(f"error: version {exc.current} is current, not {args.if_version}", file=sys.stderr)
        return 1
    finally:
        await store.close()


def profile_command(args: argparse.Namespace) -> int:
    settings = command_settings(args.env_file)
    if settings is None:
        return 2
    try:
        check_tenant(args.tenant)
    except TenantIdError as exc:
        print(f"error: --tenant: {exc.rule}", file=sys.stderr)
        return 2
    profile = None
    if args.action == "set":
        try:
            profile = read_profile(args.file)
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    return asyncio.run(_run(profile_store(settings), args, profile))
