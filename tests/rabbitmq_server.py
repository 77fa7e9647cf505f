"""A real RabbitMQ broker for the tests: Debian's ``rabbitmq-server`` as a child process.

Everything of it lives in one temporary folder (data, logs, config, Erlang cookie) and every
port is a free loopback port (AMQP, Erlang distribution, and its own ``epmd``), so parallel test
sessions on one machine never meet. ``.ci/run`` installs the package when it is missing.

We run ``/usr/lib/rabbitmq/bin/rabbitmq-server`` directly, not Debian's ``/usr/sbin`` wrapper:
the wrapper switches to the ``rabbitmq`` user and writes its start-up log under /var/log, which
would need folders owned by that user and leave files behind. Stopping is SIGTERM to the
server's process group (RabbitMQ shuts down cleanly on it, queues and persistent messages kept
on disk for a restart on the same folder and ports), then the ``epmd`` it started, found by the
port we gave it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from types import TracebackType

import pika
import pika.exceptions

from service.redis_server import free_port

SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"


def rabbitmq_available() -> bool:
    return os.access(SERVER, os.X_OK)


class RabbitMQServer:
    """One RabbitMQ node on 127.0.0.1; ``url`` is its AMQP URL (guest may log in on loopback)."""

    def __init__(self) -> None:
        self.base = Path(tempfile.mkdtemp(prefix="triggers-rabbitmq-"))
        self.port = free_port()
        self.dist_port = free_port()
        self.epmd_port = free_port()
        self.node = f"triggers-{uuid.uuid4().hex[:8]}@localhost"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/%2F"

    def _env(self) -> dict[str, str]:
        (self.base / "enabled_plugins").write_text("[].\n")
        (self.base / "rabbitmq.conf").write_text("log.console = false\n")
        (self.base / "rabbitmq-env.conf").write_text("")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RABBITMQ_", "ERL_"))}
        env.update({
            "HOME": str(self.base),  # the Erlang cookie is created here
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "ERL_EPMD_PORT": str(self.epmd_port),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "RABBITMQ_MNESIA_BASE": str(self.base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.base / "log"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.base / "enabled_plugins"),
            "RABBITMQ_CONFIG_FILE": str(self.base / "rabbitmq.conf"),
            "RABBITMQ_CONF_ENV_FILE": str(self.base / "rabbitmq-env.conf"),
            "RABBITMQ_PID_FILE": str(self.base / "rabbitmq.pid"),
        })  # fmt: skip
        return env

    def start(self, timeout: float = 90.0) -> RabbitMQServer:
        """Start the node and wait until it accepts an AMQP connection."""
        with open(self.base / "server.out", "ab") as out:
            self.process = subprocess.Popen(
                [SERVER], env=self._env(), cwd=self.base, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            if self._answers():
                return self
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"rabbitmq-server did not start: {self.log_tail()}")

    def _answers(self) -> bool:
        parameters = pika.URLParameters(self.url + "?connection_attempts=1&socket_timeout=2")
        pika_log = logging.getLogger("pika")
        level = pika_log.level
        pika_log.setLevel(logging.CRITICAL)  # a refused try is expected while it starts
        try:
            pika.BlockingConnection(parameters).close()
        except pika.exceptions.AMQPError:
            return False
        finally:
            pika_log.setLevel(level)
        return True

    def log_tail(self, lines: int = 30) -> str:
        path = self.base / "server.out"
        text = path.read_text(errors="replace") if path.exists() else "(no output)"
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 60.0) -> None:
        """SIGTERM to the node's process group, wait (SIGKILL as fallback), then its epmd."""
        process, self.process = self.process, None
        if process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)  # anything of it left behind
        self._stop_epmd()

    def _stop_epmd(self) -> None:
        """epmd daemonizes out of the node's group; it is ours if it listens on our port."""
        for pid in _epmd_pids(self.epmd_port):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGTERM)

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self) -> RabbitMQServer:
        try:
            return self.start()
        except BaseException:
            self.remove()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.remove()


def _epmd_pids(port: int) -> list[int]:
    """PIDs of epmd processes started with ERL_EPMD_PORT=``port`` (from /proc)."""
    found = []
    wanted = f"ERL_EPMD_PORT={port}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if b"epmd" not in (entry / "cmdline").read_bytes():
                continue
            if wanted in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
        except OSError:
            continue
    return found
