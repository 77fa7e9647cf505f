"""A real stack for end-to-end tests: the API (`triggers serve` against the test Redis) and
worker processes (`triggers worker`) as subprocesses, a recording HTTP task server on loopback,
and an engine on the same key prefix for assertions."""

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
from redis.exceptions import ConnectionError as RedisConnectionError

from service.engine import Engine, Instance
from service.redis_server import free_port

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


@pytest.fixture(scope="session")
def stack(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    prefix = f"e2e-{uuid.uuid4().hex[:8]}"
    env = stack_env(redis_url, prefix, str(tmp_path_factory.mktemp("e2e")))
    api, url = start_api(env)
    stack = Stack(url, prefix, env, api, [])
    stack.start_worker()
    try:
        yield stack
    finally:
        for process in [*stack.workers, api]:
            stop(process)


@pytest.fixture
async def engine_e2e(stack: Stack, redis_url: str) -> AsyncIterator[Engine]:
    engine = Engine(Redis.from_url(redis_url, decode_responses=True), prefix=stack.prefix,
                    finalize=False)  # fmt: skip
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
