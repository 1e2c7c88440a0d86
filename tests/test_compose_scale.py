"""The compose ``scale`` profile keeps nothing in a replica: read statically (no Docker engine).

Two replicas behind a load balancer must share every piece of state, or an order created
through one is invisible through the other and lost with its container. Each replica's settings
are resolved as compose does (``env_file`` then ``environment``); every setting that names a
file or folder is classified (a setting added later fails here until it is), and each one the
service writes under those settings must be on a named volume both replicas mount, never a
SQLite file (that state belongs in PostgreSQL or Redis). The replicas' root filesystem is
read-only, so a write this table missed fails loudly instead of splitting the data.
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from msev15.common.env import read_env_file
from msev15.config import VARIABLES

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
WORKDIR = "/app"  # the image's WORKDIR: relative paths in settings resolve against it
REPLICAS = ("api-1", "api-2")
DATABASE_URL = "postgresql://msev15:msev15@postgres:5432/msev15"
REDIS_URL = "redis://redis:6379/0"

Env = dict[str, str]


def _off(value: str) -> bool:
    return value.strip().lower() in ("", "0", "false", "no", "off")


# When the service writes each path setting. SQLite files hold state the shared stores must hold
# instead: with DATABASE_URL, orders and API keys are in PostgreSQL (and API keys in Redis with
# SESSION_STORE=redis); sessions are in SQLite only with SESSION_STORE=sqlite.
SQLITE_FILES: dict[str, Callable[[Env], bool]] = {
    "API_KEYS_DB_PATH": lambda e: _off(e.get("DATABASE_URL", "")) and e.get("SESSION_STORE") != "redis",
    "SESSION_DB_PATH": lambda e: e.get("SESSION_STORE") == "sqlite",
    "ORDER_DB_PATH": lambda e: _off(e.get("DATABASE_URL", "")),
}
# Files and folders a replica may write when they are on a shared volume.
SHAREABLE: dict[str, Callable[[Env], bool]] = {
    "EMAIL_OUTBOX_DIR": lambda e: _off(e.get("SMTP_SERVER", "")),  # .eml files, unique names
    "LOG_FILE_PATH": lambda e: not _off(e.get("LOG_TO_FILE", "true")),
}
READ_ONLY = {"EMAIL_ATTACHMENTS_DIR", "SYSTEM_PROMPT_FILE", "JWT_PUBLIC_KEY_FILE"}
NOT_PATHS = {"LOG_TO_FILE"}  # a switch


def _environment(service: dict[str, Any]) -> Env:
    env: Env = {}
    files = service.get("env_file") or []
    for name in [files] if isinstance(files, str) else files:
        env.update(read_env_file(ROOT / (name if isinstance(name, str) else name["path"])))
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        raw = dict(item.split("=", 1) for item in raw)
    env.update({k: "" if v is None else str(v) for k, v in raw.items()})
    return env


def _mounts(service: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """(source, target, read_only) of each volume entry, short or long syntax."""
    mounts = []
    for entry in service.get("volumes") or []:
        if isinstance(entry, str):
            source, _, rest = entry.partition(":")
            target, _, mode = rest.partition(":")
            mounts.append((source, target, "ro" in mode.split(",")))
        else:
            mounts.append((str(entry.get("source", "")), str(entry["target"]), bool(entry.get("read_only"))))
    return mounts


def _under(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def replica_problems(compose: dict[str, Any]) -> list[str]:
    services = compose.get("services") or {}
    named = set(compose.get("volumes") or {})
    problems = []
    unclassified = sorted(v.name for v in VARIABLES if v.name.endswith(("_PATH", "_DIR", "_FILE"))
                          and v.name not in {*SQLITE_FILES, *SHAREABLE, *READ_ONLY, *NOT_PATHS})
    if unclassified:
        problems.append(f"path settings this test does not classify yet: {unclassified}")
    for required in ("postgres", "redis"):
        if "scale" not in (services.get(required) or {}).get("profiles", []):
            problems.append(f"the scale profile has no {required} service")
    mounts_of = {name: _mounts(services.get(name) or {}) for name in REPLICAS}
    for name in REPLICAS:
        service = services.get(name)
        if service is None:
            problems.append(f"the scale profile has no replica {name}")
            continue
        env = _environment(service)
        expected = {"SESSION_STORE": "postgres", "DATABASE_URL": DATABASE_URL, "REDIS_URL": REDIS_URL}
        problems += [f"{name}: {key} should be {value}, got {env.get(key)!r}" for key, value in expected.items()
                     if env.get(key) != value]
        for store in ("postgres", "redis"):
            if (service.get("depends_on") or {}).get(store, {}).get("condition") != "service_healthy":
                problems.append(f"{name} should wait for a healthy {store}")
        if service.get("read_only") is not True:
            problems.append(f"{name}: the root filesystem should be read_only (nothing written outside volumes)")
        for setting, written in SQLITE_FILES.items():
            if written(env):
                problems.append(f"{name} writes {setting}={env.get(setting)!r}: a SQLite file per replica")
        for setting, written in SHAREABLE.items():
            if not written(env):
                continue
            path = posixpath.normpath(posixpath.join(WORKDIR, env.get(setting, "")))
            mount = next((m for m in mounts_of[name] if _under(path, m[1])), None)
            if mount is None or mount[0] not in named:
                problems.append(f"{name} writes {setting}={path} outside a named volume")
            elif mount[2]:
                problems.append(f"{name} writes {setting}={path} on a read-only mount")
            elif any(mount not in mounts_of[other] for other in REPLICAS):
                problems.append(f"{name} writes {setting}={path} on a volume the other replica does not share")
    return problems


def _load() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    return loaded


def test_the_scale_replicas_keep_no_state_of_their_own() -> None:
    assert replica_problems(_load()) == []


def _set(service: str, key: str, value: str) -> Callable[[dict[str, Any]], None]:
    def change(compose: dict[str, Any]) -> None:
        compose["services"][service].setdefault("environment", {})[key] = value
    return change


def _unset_volumes(service: str) -> Callable[[dict[str, Any]], None]:
    def change(compose: dict[str, Any]) -> None:
        compose["services"][service].pop("volumes", None)
    return change


def _bind_data(compose: dict[str, Any]) -> None:
    compose["services"]["api-2"]["volumes"] = ["./data-2:/app/data"]


def _own_volume(compose: dict[str, Any]) -> None:
    compose["volumes"]["api-2-data"] = None
    compose["services"]["api-2"]["volumes"] = ["api-2-data:/app/data"]


def _read_only_data(compose: dict[str, Any]) -> None:
    compose["services"]["api-1"]["volumes"] = ["shared-data:/app/data:ro"]


@pytest.mark.parametrize(("change", "problem"), [
    (_set("api-1", "DATABASE_URL", ""), "api-1 writes ORDER_DB_PATH"),
    (_set("api-2", "SESSION_STORE", "sqlite"), "api-2 writes SESSION_DB_PATH"),
    (_set("api-1", "SESSION_STORE", "memory"), "api-1: SESSION_STORE should be postgres"),
    (_set("api-2", "REDIS_URL", ""), "api-2: REDIS_URL"),
    (_set("api-1", "LOG_TO_FILE", "true"), "api-1 writes LOG_FILE_PATH"),
    (_set("api-2", "EMAIL_OUTBOX_DIR", "outbox"), "api-2 writes EMAIL_OUTBOX_DIR=/app/outbox outside"),
    (_unset_volumes("api-1"), "api-1 writes EMAIL_OUTBOX_DIR=/app/data/outbox outside a named volume"),
    (_bind_data, "api-2 writes EMAIL_OUTBOX_DIR=/app/data/outbox outside a named volume"),
    (_own_volume, "the other replica does not share"),
    (_read_only_data, "api-1 writes EMAIL_OUTBOX_DIR=/app/data/outbox on a read-only mount"),
    (lambda c: c["services"]["api-1"].pop("read_only"), "api-1: the root filesystem"),
    (lambda c: c["services"]["api-2"]["depends_on"].pop("postgres"), "api-2 should wait for a healthy postgres"),
    (lambda c: c["services"].pop("postgres"), "no postgres service"),
])
def test_the_check_catches_a_replica_that_keeps_state(change: Callable[[dict[str, Any]], None],
                                                     problem: str) -> None:
    compose = json.loads(json.dumps(_load()))  # the replicas' YAML anchor shares objects: one copy each
    change(compose)
    problems = replica_problems(compose)
    assert any(problem in p for p in problems), problems
