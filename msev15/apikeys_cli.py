"""``msev15 keys create | list | revoke``: manage the API keys of AUTH_MODE=api_key.

The new key is printed once, on stdout alone (so ``KEY=$(msev15 keys create --tenant acme)``
works); only its digest is stored. ``list`` never shows a secret.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import UTC, datetime

from msev15.common.roles import DEFAULT_ROLE, ROLES
from msev15.common.tenancy import TenantIdError, check_tenant
from msev15.config import command_settings
from msev15.store.apikeys import ApiKeyStore
from msev15.topology import api_key_store


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    keys = commands.add_parser("keys", help="create, list or revoke API keys (AUTH_MODE=api_key)")
    keys.add_argument("--env-file", help="read settings from this file (default: ./.env if present)")
    actions = keys.add_subparsers(dest="action", required=True)
    create = actions.add_parser("create", help="create a key for a tenant and print it once")
    create.add_argument("--tenant", required=True, help="the tenant the key acts for")
    create.add_argument("--name", default="",
                        help="a label, e.g. the app that uses the key (an operator's name shown to customers)")
    create.add_argument("--role", default=DEFAULT_ROLE, choices=ROLES,
                        help="customer (the chat API, the default), operator (also the handoff routes) or admin")
    actions.add_parser("list", help="list keys (id, tenant, role, name, created, last used, revoked); never the "
                       "secret")
    revoke = actions.add_parser("revoke", help="revoke a key by id (running instances refuse it within seconds)")
    revoke.add_argument("id")


def _when(ts: float | None) -> str:
    return "-" if ts is None else datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def _run(store: ApiKeyStore, args: argparse.Namespace) -> int:
    try:
        if args.action == "create":
            record, key = await store.create(args.tenant, args.name, args.role)
            print(key)
            print(f"Created key {record.id} for tenant {record.tenant_id} with role {record.role}. It is shown "
                  "only now: store it safely.", file=sys.stderr)
            return 0
        if args.action == "list":
            print(f"{'ID':<16}  {'TENANT':<20}  {'ROLE':<8}  {'NAME':<20}  {'CREATED':<20}  {'LAST USED':<20}  "
                  "STATUS")
            for r in await store.list():
                status = "active" if r.active else f"revoked {_when(r.revoked_at)}"
                print(f"{r.id:<16}  {r.tenant_id:<20}  {r.role:<8}  {r.name:<20}  {_when(r.created_at):<20}  "
                      f"{_when(r.last_used_at):<20}  {status}")
            return 0
        if await store.revoke(args.id):
            print(f"Revoked key {args.id}.")
            return 0
        print(f"error: no active key with id {args.id!r}", file=sys.stderr)
        return 1
    finally:
        await store.close()


def keys_command(args: argparse.Namespace) -> int:
    settings = command_settings(args.env_file)
    if settings is None:
        return 2
    if args.action == "create":
        try:
            check_tenant(args.tenant)
        except TenantIdError as exc:
            print(f"error: --tenant: {exc.rule}", file=sys.stderr)
            return 2
    return asyncio.run(_run(api_key_store(settings), args))
