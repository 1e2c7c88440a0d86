"""A throwaway PostgreSQL cluster on loopback for tests and the bench: Debian's ``initdb`` and
``pg_ctl`` in a temp dir, a free port, its unix socket in that dir, trust auth on loopback only.

initdb refuses to run as root, so under root (CI) the cluster runs as the ``postgres`` system user
with its directory chowned to it. ``restart()`` is the fault the tests inject (``pg_ctl restart``).
"""

from __future__ import annotations

import asyncio
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

START_SECONDS = 30


def bindir() -> Path | None:
    """Where initdb and pg_ctl are: ``pg_config --bindir``, else the newest /usr/lib/postgresql/*/bin."""
    candidates: list[str] = []
    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            candidates.append(subprocess.run([pg_config, "--bindir"], capture_output=True, text=True,
                                             check=True, timeout=10).stdout.strip())
        except (OSError, subprocess.SubprocessError):
            pass
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]), reverse=True)
    for found in candidates:
        if (Path(found) / "initdb").is_file() and (Path(found) / "pg_ctl").is_file():
            return Path(found)
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PgCluster:
    """``start()`` once; ``url(db)`` for a database; ``create_database()`` for a fresh one;
    ``restart()``; ``stop()`` removes everything."""

    def __init__(self, binaries: Path) -> None:
        self.bin = binaries
        self.root = Path(tempfile.mkdtemp(prefix="msev15-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self._user: pwd.struct_passwd | None = pwd.getpwnam("postgres") if os.geteuid() == 0 else None
        self._created = 0
        self._template = False

    def _run(self, *args: str, check: bool = True, timeout: float = START_SECONDS) -> subprocess.CompletedProcess[str]:
        extra: dict[str, Any] = {}
        if self._user is not None:
            extra = {"user": self._user.pw_uid, "group": self._user.pw_gid, "extra_groups": []}
        return subprocess.run(args, capture_output=True, text=True, check=check, timeout=timeout, cwd=self.root,
                              env={"PATH": os.environ.get("PATH", ""), "LC_ALL": "C.UTF-8"}, **extra)

    def start(self) -> PgCluster:
        if self._user is not None:
            os.chown(self.root, self._user.pw_uid, self._user.pw_gid)
        self._run(str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust",
                  "--encoding=UTF8", "--no-sync")
        self.start_server()
        return self

    def start_server(self) -> None:
        """``pg_ctl start`` on the same port and directory, waiting until it accepts connections."""
        options = (f"-c listen_addresses=127.0.0.1 -c port={self.port} -c unix_socket_directories={self.root} "
                   "-c fsync=off -c max_connections=200 -c shared_buffers=32MB")
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-o", options, "-l", str(self.root / "pg.log"),
                  "-w", "-t", str(START_SECONDS), "start")

    def stop_server(self) -> None:
        """``pg_ctl stop -m fast``: every connection is dropped, new ones are refused."""
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "-t", str(START_SECONDS), "stop")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, prefix: str = "t", *, empty: bool = False) -> str:
        """A fresh database; its URL. By default a copy (CREATE DATABASE ... TEMPLATE) of one
        migrated once per cluster, so a test pays neither the migrations nor their catalog work;
        ``empty``: from template0, for the tests of the migrations themselves."""
        template = "template0" if empty else self._migrated_template()
        self._created += 1
        name = f"{prefix}_{os.getpid()}_{self._created}"
        self.psql(f"CREATE DATABASE {name} TEMPLATE {template}")
        return self.url(name)

    def _migrated_template(self) -> str:
        if not self._template:
            self.psql("CREATE DATABASE msev15_template TEMPLATE template0")
            # the service's own migrations, run once (in a thread: the caller may be inside a loop)
            worker = threading.Thread(target=asyncio.run, args=(_migrate(self.url("msev15_template")),))
            worker.start()
            worker.join()
            self._template = True
        return "msev15_template"

    def psql(self, sql: str, database: str = "postgres") -> str:
        psql = self.bin / "psql"
        return self._run(str(psql), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-d", database,
                         "-v", "ON_ERROR_STOP=1", "-Atc", sql).stdout

    def restart(self) -> None:
        """``pg_ctl restart`` (fast shutdown: every connection is dropped), waiting until it accepts again."""
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-l", str(self.root / "pg.log"),
                  "-w", "-t", str(START_SECONDS), "restart")

    def stop(self) -> None:
        if self.data.exists():
            self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop", check=False)
        shutil.rmtree(self.root, ignore_errors=True)

    def postmaster_pid(self) -> int:
        return int((self.data / "postmaster.pid").read_text().split("\n", 1)[0])

    def log(self) -> str:
        path = self.root / "pg.log"
        return path.read_text(errors="replace") if path.exists() else ""


async def _migrate(url: str) -> None:
    from msev15.store.pg_kit import open_database

    database = await open_database(url, max_size=1)
    await database.close()


def start_cluster(skip: Callable[[str], Any]) -> PgCluster | None:
    """A started cluster, or ``skip(reason)`` (None) when the binaries are missing, except under
    CI=true, where a missing install is an error."""
    binaries = bindir()
    if binaries is None:
        reason = "PostgreSQL binaries (initdb, pg_ctl) not found: install Debian's postgresql package"
        if os.environ.get("CI", "").lower() == "true":
            raise RuntimeError(reason)
        skip(reason)
        return None
    return PgCluster(binaries).start()
