"""A real stack for end-to-end tests: the API (`triggers serve` against the test Redis) and
worker processes (`triggers worker`) as subprocesses, a recording HTTP task server on loopback,
and an engine on the same key prefix for assertions.

The ``stack`` runs on each topology of ``TOPOLOGIES`` in turn: state and broker on one Redis,
then state on the three-master Redis Cluster with the broker on RabbitMQ (a node this session
starts from Debian's rabbitmq-server) or on a standalone broker Redis."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError

from service.engine import Engine, Instance
from service.redis_server import RedisClusterServer, RedisServer, free_port
from tests.rabbitmq_server import RabbitMQServer, rabbitmq_available

Reply = tuple[int, dict[str, str], bytes]
Handler = Callable[[dict[str, Any], dict[str, str]], Reply]


@dataclass
class TaskServer:
    """HTTP task endpoints on 127.0.0.1; ``routes[path]`` decides each answer."""

    routes: dict[str, Handler] = field(default_factory=dict)
    calls: list[tuple[str, dict[str, Any], dict[str, str], float]] = field(default_factory=list)
    port: int = 0

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def calls_to(self, path: str) -> list[dict[str, Any]]:
        return [body for p, body, _, _ in self.calls if p == path]


def _handler_class(server: TaskServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("content-length", 0))
            body = json.loads(self.rfile.read(length) or b"{}")
            headers = {k.lower(): v for k, v in self.headers.items()}
            server.calls.append((self.path, body, headers, time.time()))
            route = server.routes.get(self.path)
            status, reply_headers, content = (
                route(body, headers) if route else (404, {}, b"no route")
            )
            self.send_response(status)
            for name, value in reply_headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(content)))
            self.end_headers()
            self.wfile.write(content)

        def log_message(self, *args: Any) -> None:
            pass

    return Handler


@pytest.fixture(scope="session")
def task_server() -> Iterator[TaskServer]:
    server = TaskServer()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler_class(server))
    server.port = httpd.server_address[1]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield server
    httpd.shutdown()


@dataclass
class Stack:
    api_url: str
    prefix: str
    env: dict[str, str]
    api: subprocess.Popen[bytes]
    workers: list[subprocess.Popen[bytes]]
    topology: Topology | None = None

    def start_worker(self, threads: int = 4) -> subprocess.Popen[bytes]:
        """A `triggers worker` process; its log goes to worker.log in the data folder."""
        log_path = os.path.join(self.env["TRIGGERS_DATA_DIR"], "worker.log")
        with open(log_path, "ab") as log_file:
            process = subprocess.Popen(
                [sys.executable, "-m", "service.cli", "worker", "--processes", "1",
                 "--threads", str(threads)],
                env=self.env, stdout=subprocess.DEVNULL, stderr=log_file,
                start_new_session=True,  # its worker children share its process group
            )  # fmt: skip
        self.workers.append(process)
        return process

    def kill_workers(self) -> None:
        """SIGKILL every worker process, children included: no chance to clean up."""
        for process in self.workers:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        self.workers.clear()


def stack_env(redis_url: str, prefix: str, data_dir: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIGGERS_")}
    env.update({
        "TRIGGERS_REDIS_URL": redis_url,
        "TRIGGERS_KEY_PREFIX": prefix,
        "TRIGGERS_AUTH": "off",
        "TRIGGERS_DATA_DIR": data_dir,
        "TRIGGERS_OUTBOUND_ALLOW": "127.0.0.1",
        "TRIGGERS_TASK_MODULES": "tests.tasks_for_tests",
        "TRIGGERS_LEASE_SECONDS": "3",
        "TRIGGERS_SWEEP_INTERVAL": "0.5",
        "TRIGGERS_SWEEP_GRACE": "1",
        "TRIGGERS_WEBHOOK_RETRY_SCHEDULE": "0.3,0.3,0.3",
    })  # fmt: skip
    return env


def wait_http(url: str, process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args} exited with {process.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer")


def start_api(env: dict[str, str]) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "serve", "--port", str(port), "--log-level",
         "warning"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/readyz", process)
    return process, url


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)  # worker children, if it led its own group


@dataclass
class Topology:
    """Where state and broker live. ``stop_broker`` and ``start_broker`` restart a separate
    broker on the same port and data folder (None: the broker is the state Redis)."""

    name: str
    state_url: str
    cluster: bool
    broker_url: str | None
    stop_broker: Callable[[], object] | None = None
    start_broker: Callable[[], object] | None = None

    def env(self) -> dict[str, str]:
        env = {"TRIGGERS_REDIS_URL": self.state_url}
        if self.cluster:
            env["TRIGGERS_REDIS_CLUSTER"] = "true"
        if self.broker_url:
            env["TRIGGERS_BROKER_URL"] = self.broker_url
        return env

    def client(self) -> Redis | RedisCluster:
        if self.cluster:
            return RedisCluster.from_url(self.state_url, decode_responses=True)
        return Redis.from_url(self.state_url, decode_responses=True)


TOPOLOGIES = ["redis", "cluster+rabbitmq", "cluster+redis-broker"]
"""``redis``: state and broker on one standalone Redis. The scale-out topologies keep state on
the three-master Redis Cluster and the broker apart: RabbitMQ, or a standalone broker Redis."""
SCALE_OUT = TOPOLOGIES[1:]


@pytest.fixture(scope="session")
def rabbitmq() -> Iterator[RabbitMQServer]:
    """A RabbitMQ node of this test session (never skipped: .ci/run installs the package)."""
    if not rabbitmq_available():
        pytest.fail("rabbitmq-server is not installed: run .ci/run (it installs it) or "
                    "apt-get install rabbitmq-server")  # fmt: skip
    with RabbitMQServer() as server:
        yield server


@pytest.fixture(scope="session")
def broker_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A standalone Redis used only as the Dramatiq broker (append-only, in a folder that
    outlives a stop: a restart keeps queued messages, as a production broker would)."""
    with RedisServer(data_dir=tmp_path_factory.mktemp("broker-redis"), appendonly=True) as server:
        yield server


def topology(request: pytest.FixtureRequest, name: str, redis_url: str) -> Topology:
    """The named topology, its servers started by their session fixtures."""
    if name == "redis":
        return Topology(name, redis_url, cluster=False, broker_url=None)
    cluster: RedisClusterServer = request.getfixturevalue("redis_cluster")
    if name == "cluster+rabbitmq":
        rabbit: RabbitMQServer = request.getfixturevalue("rabbitmq")
        return Topology(name, cluster.url, cluster=True, broker_url=rabbit.url,
                        stop_broker=rabbit.stop, start_broker=rabbit.start)  # fmt: skip
    broker: RedisServer = request.getfixturevalue("broker_redis")
    return Topology(name, cluster.url, cluster=True, broker_url=broker.url,
                    stop_broker=broker.stop, start_broker=broker.start)  # fmt: skip


@pytest.fixture(scope="session", params=TOPOLOGIES)
def stack(
    request: pytest.FixtureRequest, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    """The API and one worker on each topology in turn (tests may narrow the list with
    ``@pytest.mark.parametrize("stack", [...], indirect=True)``)."""
    where = topology(request, request.param, redis_url)
    prefix = f"e2e-{uuid.uuid4().hex[:8]}"
    env = stack_env(where.state_url, prefix, str(tmp_path_factory.mktemp("e2e")))
    env.update(where.env())
    api, url = start_api(env)
    stack = Stack(url, prefix, env, api, [], where)
    stack.start_worker()
    try:
        yield stack
    finally:
        for process in [*stack.workers, api]:
            stop(process)


@pytest.fixture
async def engine_e2e(stack: Stack) -> AsyncIterator[Engine]:
    assert stack.topology is not None
    engine = Engine(stack.topology.client(), prefix=stack.prefix, finalize=False)
    yield engine
    await engine.aclose()


@pytest.fixture
async def client(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=stack.api_url, timeout=10) as http:
        yield http


def new_uid() -> str:
    return f"applicant:{uuid.uuid4().hex[:10]}"


async def wait_for(
    engine: Engine,
    uid: str,
    done: Callable[[dict[str, Instance]], bool],
    timeout: float = 20,
) -> dict[str, Instance]:
    """Poll the session until ``done(instances)``; fail with the last state otherwise."""
    deadline = time.monotonic() + timeout
    instances: dict[str, Instance] = {}
    while time.monotonic() < deadline:
        try:
            instances = (await engine.snapshot(uid)).instances
        except RedisConnectionError:  # a Redis being restarted by the test
            await asyncio.sleep(0.1)
            continue
        if done(instances):
            return instances
        await asyncio.sleep(0.05)
    states = {name: i.status for name, i in instances.items()}
    raise AssertionError(f"timed out; instances: {states}")


def all_resolved(instances: dict[str, Instance]) -> bool:
    return bool(instances) and all(i.resolved for i in instances.values())
