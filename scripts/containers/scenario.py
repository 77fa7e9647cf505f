"""The container test's scenario, run by scripts/test-containers once the image is built.

It runs docker-compose.yml's services from the built image (compose.py says how) and checks
what an operator relies on:

1. the image: non-root user, no compiler, the entrypoint and default command that serve the
   API on 0.0.0.0:8000 (healthy by the image's HEALTHCHECK); ``api-key`` (any subcommand)
   runs as arguments;
2. Redis, the API and a worker with the compose file's settings and triggers.env made as the
   README says (from triggers.env.example: authentication off), each healthy by its health
   check; the README's Quick start curl commands run unchanged against it;
3. a session end to end: an HTTP task served here on loopback (its signature checked), then a
   signed sessionFinalized webhook received and verified with standardwebhooks;
4. every container stopped and started again: each exits 0 within its grace period and the
   session is intact;
5. ``podman stop`` of the worker while it runs a slow task: it exits 0 within its grace
   period and the instance ends finished (no work lost);
6. the ``scale`` profile: the same with RabbitMQ as the broker (checked: its queues hold the
   messages, Redis none), two workers, and authentication on with a key from ``api-key``.

Image, Redis and RabbitMQ images come from TRIGGERS_IMAGE, REDIS_IMAGE and RABBITMQ_IMAGE.
Each step prints the time it took.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
from standardwebhooks.webhooks import Webhook

sys.path.insert(0, str(Path(__file__).parent))
from compose import Stack, podman

ROOT = Path(__file__).resolve().parents[2]
IMAGE = os.environ["TRIGGERS_IMAGE"]
API = "http://127.0.0.1:8000"


def step(title: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Print the step's title and the seconds it took."""

    def wrap(function: Callable[..., Any]) -> Callable[..., Any]:
        def run(*args: Any, **kwargs: Any) -> Any:
            print(f"\n== {title}", flush=True)
            start = time.monotonic()
            result = function(*args, **kwargs)
            print(f"-- {title}: {time.monotonic() - start:.1f}s", flush=True)
            return result

        return run

    return wrap


def wait(condition: Callable[[], Any], what: str, timeout: float = 60) -> Any:
    """Poll until ``condition()`` is truthy (generous deadline: a loaded 2-core machine)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            value = condition()
            if value:
                return value
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


@dataclass
class Endpoints:
    """The HTTP task and the webhook receiver, on 127.0.0.1 in the test's namespace. Both
    verify the Standard Webhooks signature with the deployment's secret."""

    secret: str
    task_delay: float = 0.0
    tasks: list[dict[str, Any]] = field(default_factory=list)
    hooks: list[dict[str, Any]] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    port: int = 0

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def handle(self, path: str, body: str, headers: dict[str, str]) -> tuple[int, bytes]:
        event = Webhook(self.secret).verify(body, headers)  # raises on a bad signature
        if path.startswith("/task"):
            self.tasks.append({"body": event, "headers": headers})
            time.sleep(self.task_delay)
            return 200, json.dumps({"compared": True, "attempt": event["attempt"]}).encode()
        self.hooks.append({"body": event, "headers": headers})
        return 204, b""


@contextlib.contextmanager
def endpoints(secret: str) -> Iterator[Endpoints]:
    state = Endpoints(secret)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["content-length"])).decode()
            headers = {k.lower(): v for k, v in self.headers.items()}
            try:
                status, content = state.handle(self.path, body, headers)
            except Exception as error:  # a bad signature must fail the test, loudly
                print(f"endpoint {self.path}: {error!r}", flush=True)
                state.refused.append(f"{self.path}: {error!r}")
                status, content = 401, b""
            self.send_response(status)
            self.send_header("Content-Length", str(len(content)))
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(content)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.port = server.server_address[1]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield state
    finally:
        server.shutdown()


@step("image: non-root, no compiler, entrypoint and default command")
def check_image() -> tuple[str, dict[str, Any]]:
    image = json.loads(podman("image", "inspect", IMAGE).stdout)[0]
    config = image["Config"]
    assert config["Entrypoint"] == ["dumb-init", "--", "triggers"], config["Entrypoint"]
    assert config["Cmd"] == ["serve", "--host", "0.0.0.0", "--port", "8000"], config["Cmd"]
    assert config.get("StopSignal") == "SIGTERM", config.get("StopSignal")
    assert image.get("HealthCheck") or image.get("Healthcheck"), "no HEALTHCHECK"
    assert not [e for e in config["Env"] if e.startswith("PIP_")], config["Env"]
    probe = (
        "import os, shutil; print(os.getuid(), [c for c in ('gcc', 'cc', 'c++', 'clang', "
        "'make', 'ld', 'as') if shutil.which(c)])"
    )
    one_off = ("run", "--rm", "--network", "none")
    out = podman(*one_off, "--entrypoint", "python3", IMAGE, "-c", probe).stdout.split(" ", 1)
    assert out[0] != "0", "the image runs as root"
    assert out[1].strip() == "[]", f"compilers in the image: {out[1]}"
    print(f"user {out[0]}, no compiler; entrypoint {config['Entrypoint']} cmd {config['Cmd']}")
    made = podman(*one_off, IMAGE, "api-key", "ci", "--scope", "read", "--scope", "fire",
                  "--scope", "configure", "--scope", "operate").stdout  # fmt: skip
    key = made.split("stored): ", 1)[1].split()[0]
    entry = json.loads(made.strip().splitlines()[-1])
    return key, entry


@step("docker run IMAGE: the default command serves on 0.0.0.0:8000 and stops on SIGTERM")
def check_default_command() -> None:
    """No arguments, no Redis URL: the API on 0.0.0.0:8000 with its embedded Redis in /data,
    healthy by the image's own HEALTHCHECK; podman stop ends it with exit 0."""
    name = f"triggers-ci-{os.getpid()}-default-cmd"
    netns = f"ns:/run/netns/{os.environ['TRIGGERS_CI_NETNS']}"
    podman("run", "--detach", "--name", name, "--network", netns, "--env", "TRIGGERS_AUTH=off",
           "--stop-timeout", "20", IMAGE)  # fmt: skip
    try:
        wait(lambda: podman("healthcheck", "run", name, check=False).returncode == 0,
             "the image's HEALTHCHECK")  # fmt: skip
        answer = httpx.get(f"{API}/sessions/ci:none", timeout=10)
        assert answer.status_code == 404, answer.text
        start = time.monotonic()
        podman("stop", name, timeout=80)
        took = time.monotonic() - start
        code = podman("inspect", "--format", "{{.State.ExitCode}}", name).stdout.strip()
        print(f"{name}: served on :8000, exit {code} after {took:.1f}s")
        assert code == "0" and took < 20, podman("logs", name, check=False).stderr
    finally:
        podman("rm", "--force", name, check=False)


def readme_curl_examples() -> None:
    """The README's Quick start curl commands, run unchanged against the container (auth off,
    as triggers.env.example has it): the session exists and t_compare waits for fauna_page6."""
    readme = (ROOT / "README.md").read_text()
    block = next(b for b in readme.split("```sh")[1:] if "curl -X PATCH localhost:8000" in b)
    commands = block.split("```", 1)[0]
    result = subprocess.run(["bash", "-euo", "pipefail", "-c", commands], capture_output=True,
                            text=True, timeout=60)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    session = httpx.get(f"{API}/sessions/applicant:123", timeout=10).json()
    assert "flora_page3" in session["latestKwargs"], session
    assert "t_compare" in result.stdout and "fauna_page6" in result.stdout, result.stdout
    print("README quick start curl examples: ok")


def env_file(directory: Path, values: dict[str, str]) -> None:
    """triggers.env as the README says: the example, with the test's values filled in."""
    lines = (ROOT / "triggers.env.example").read_text().splitlines()
    kept = [line for line in lines if line.split("=", 1)[0] not in values]
    (directory / "triggers.env").write_text(
        "\n".join(kept + [f"{k}={v}" for k, v in values.items()]) + "\n"
    )


def session_config(ends: Endpoints) -> dict[str, Any]:
    return {
        "tasks": {"t_compare": {"after": ["flora_page3", "fauna_page6"], "unless": ["withdrawn"],
                                "run": ends.url("/task/compare")}},
        "webhooks": [{"url": ends.url("/hook"), "events": ["sessionFinalized"]}],
    }  # fmt: skip


@step("a session end to end: HTTP task, signed sessionFinalized webhook")
def run_session(api: httpx.Client, ends: Endpoints) -> str:
    uid = f"ci:{uuid.uuid4().hex[:10]}"
    answer = api.put(f"/sessions/{uid}/config", json=session_config(ends))
    assert answer.status_code in (200, 201), answer.text
    for trigger, kwargs in (("flora_page3", {"q1": "yes"}), ("fauna_page6", {"page": 6})):
        answer = api.post(f"/sessions/{uid}/fire", json={"trigger": trigger, "kwargs": kwargs})
        assert answer.status_code in (200, 202), answer.text
    hook = wait(lambda: [h for h in ends.hooks if h["body"]["session"] == uid], "the webhook")[0]
    assert hook["body"]["type"] == "sessionFinalized" and hook["body"]["data"]["finalizedAt"]
    session = api.get(f"/sessions/{uid}").json()
    instance = session["instances"]["t_compare#0"]
    assert instance["status"] == "finished", instance
    assert session["finalized"] is True, session
    assert ends.refused == [], ends.refused
    [task] = [t for t in ends.tasks if t["body"]["session"] == uid]
    key = f"{uid}/t_compare#0/{session['sessionId']}"  # the session's incarnation (API.md)
    assert task["headers"]["idempotency-key"] == key, task["headers"]
    assert task["body"]["kwargs"] == {"flora_page3": {"q1": "yes"}, "fauna_page6": {"page": 6}}
    print(f"{uid}: t_compare#0 finished, sessionFinalized received and verified")
    return uid


@step("the broker: Redis by default, RabbitMQ with the scale profile")
def check_broker(stack: Stack) -> None:
    """Where the task messages went: Dramatiq's keys in Redis, or the queue in RabbitMQ."""
    redis = stack.containers("redis")[0]
    scan = ("exec", redis, "redis-cli", "--scan", "--pattern", "trg-dramatiq:*")
    redis_keys = podman(*scan).stdout.split()
    if "rabbitmq" not in stack.enabled():
        assert redis_keys, "no Dramatiq keys in Redis"
        print(f"Redis holds the broker's keys: {sorted(redis_keys)[:3]}")
        return
    assert redis_keys == [], f"Dramatiq used Redis although RabbitMQ is the broker: {redis_keys}"
    rabbit = stack.containers("rabbitmq")[0]
    queues = podman(
        "exec", rabbit, "rabbitmqctl", "-q", "list_queues", "--no-table-headers", "name"
    ).stdout.split()
    assert "triggers" in queues, queues
    print(f"RabbitMQ holds the queues {queues}; no Dramatiq keys in Redis")


def wait_api(stack: Stack, api: httpx.Client) -> None:
    stack.wait_healthy(stack.containers("api")[0])
    wait(lambda: api.get("/readyz").status_code == 200, "/readyz")


def wait_workers(stack: Stack, since: float) -> None:
    """Until every worker process of every worker container has started (each logs "worker
    started"). A worker stopped in its first seconds, while Python still imports, dies of the
    SIGTERM (exit 143) before its handlers exist: nothing is lost then, but the stop checks
    below are about workers that run."""
    command = stack.service("worker")["command"]
    processes = int(command[command.index("--processes") + 1]) if "--processes" in command else 2
    for container in stack.containers("worker"):
        stack.wait_logged(container, "worker started", processes, since)


@step("start Redis, the API and the workers as docker-compose.yml describes them")
def start(stack: Stack, api: httpx.Client) -> None:
    assert stack.published_ports("api") == [8000], stack.published_ports("api")
    since = time.time() - 1
    for name in stack.order():
        stack.up(name)
    wait_api(stack, api)
    wait_workers(stack, since)
    print("up:", ", ".join(c for n in stack.enabled() for c in stack.containers(n)))


def stop_checked(stack: Stack, name: str) -> None:
    """podman stop: exit 0 within the service's grace period."""
    grace = stack.grace(name)
    for container in stack.containers(name):
        code, took = stack.stop(container, grace)
        print(f"{container}: exit {code} after {took:.1f}s (grace {grace:g}s)")
        assert code == 0 and took < grace, stack.logs(container)


@step("stop every container (SIGTERM), start again: the session is intact")
def restart_all(stack: Stack, api: httpx.Client, uid: str) -> None:
    before = api.get(f"/sessions/{uid}").json()
    for name in reversed(stack.order()):
        stop_checked(stack, name)
    since = time.time() - 1
    for name in stack.order():
        for container in stack.containers(name):
            stack.start(container)
            if name in ("redis", "rabbitmq"):
                stack.wait_healthy(container)
    wait_api(stack, api)
    wait_workers(stack, since)
    after = api.get(f"/sessions/{uid}").json()
    assert after == before, (before, after)
    print(f"{uid} unchanged after the restart")


@step("podman stop of a worker running a task: exit 0, the instance finishes")
def stop_worker_mid_task(stack: Stack, api: httpx.Client, ends: Endpoints) -> None:
    uid = f"ci:{uuid.uuid4().hex[:10]}"
    ends.task_delay = 5.0
    api.put(f"/sessions/{uid}/config", json=session_config(ends)).raise_for_status()
    for trigger in ("flora_page3", "fauna_page6"):
        api.post(f"/sessions/{uid}/fire", json={"trigger": trigger}).raise_for_status()
    wait(lambda: any(t["body"]["session"] == uid for t in ends.tasks), "the slow task's call")
    status = api.get(f"/sessions/{uid}").json()["instances"]["t_compare#0"]["status"]
    assert status == "running", status
    stop_checked(stack, "worker")
    since = time.time() - 1
    for container in stack.containers("worker"):
        stack.start(container)
    ends.task_delay = 0.0
    wait(lambda: api.get(f"/sessions/{uid}").json()["instances"]["t_compare#0"]["status"]
         == "finished", "t_compare#0 finished after the worker's stop", timeout=90)  # fmt: skip
    wait(lambda: any(h["body"]["session"] == uid for h in ends.hooks), "its webhook")
    wait_workers(stack, since)
    calls = sum(t["body"]["session"] == uid for t in ends.tasks)
    print(f"{uid}: t_compare#0 finished ({calls} call(s) of the task), webhook received")


def run_profile(directory: Path, values: dict[str, str], key: str | None, profiles: set[str],
                scale: dict[str, int], title: str) -> None:  # fmt: skip
    """Every check on one profile; ``key`` None: authentication off, as the example has it."""
    env_file(directory, values)
    prefix = f"triggers-ci-{os.getpid()}-{'-'.join(sorted(profiles)) or 'default'}"
    stack = Stack(directory / "docker-compose.yml", os.environ["TRIGGERS_CI_NETNS"], prefix,
                  profiles, scale=scale)  # fmt: skip
    print(f"\n##### {title}: services {stack.enabled()}")
    stack.down()
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    api = httpx.Client(base_url=API, headers=headers, timeout=30)
    try:
        with endpoints(values["TRIGGERS_WEBHOOK_SECRET"]) as ends:
            start(stack, api)
            if key is None:
                readme_curl_examples()
            else:
                assert httpx.get(f"{API}/sessions/x:1").status_code == 401, "no key: 401"
            uid = run_session(api, ends)
            check_broker(stack)
            restart_all(stack, api, uid)
            stop_worker_mid_task(stack, api, ends)
            final_stop(stack)
    except BaseException:
        for name in stack.enabled():
            for container in stack.containers(name):
                print(stack.logs(container))
        raise
    finally:
        api.close()
        stack.down()


@step("final stop of every container: exit 0 within the grace period")
def final_stop(stack: Stack) -> None:
    for name in reversed(stack.order()):
        stop_checked(stack, name)


def main() -> int:
    compose = (ROOT / "docker-compose.yml").read_text()
    assert "build: ." in compose
    key, entry = check_image()
    check_default_command()
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    # As the README's two commands make it (the example, authentication off, a fresh signing
    # secret), plus the loopback allowance for this test's HTTP task and webhook receiver.
    values = {"TRIGGERS_WEBHOOK_SECRET": secret, "TRIGGERS_OUTBOUND_ALLOW": "127.0.0.1"}
    directory = Path(tempfile.mkdtemp(prefix="triggers-compose-"))
    try:
        shutil.copy(ROOT / "docker-compose.yml", directory / "docker-compose.yml")
        run_profile(directory, values, None, set(), {},
                    "default profile: Redis, API, worker; the example's settings")  # fmt: skip
        password = secrets.token_hex(12)
        scale_values = {  # with API keys this time
            **values,
            "TRIGGERS_AUTH": "on",
            "TRIGGERS_API_KEYS": json.dumps([entry], separators=(",", ":")),
            "RABBITMQ_DEFAULT_USER": "triggers",
            "RABBITMQ_DEFAULT_PASS": password,
            "TRIGGERS_BROKER_URL": f"amqp://triggers:{password}@rabbitmq:5672/%2F",
        }
        run_profile(
            directory,
            scale_values,
            key,
            {"scale"},
            {"worker": 2},
            "scale profile: RabbitMQ broker, Redis state, two workers",
        )
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    print("\ncontainer scenario passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
