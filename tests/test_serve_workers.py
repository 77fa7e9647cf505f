"""`triggers serve --workers N` as real processes: N API processes on one port, one embedded
Redis, one worker group with one sweeper, a clean stop, and a dead API process replaced."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest
import redis

from service.heartbeat import alive_ids
from service.redis_server import RedisServer, free_port, free_ports

FIRE = "/sessions/{uid}/fire"


def eventually(check: Callable[[], Any], timeout: float = 60, what: str = "") -> Any:
    """``check()``'s first truthy answer; fail after ``timeout`` seconds (a loaded machine)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            answer = check()
        except (httpx.HTTPError, OSError):
            answer = None
        if answer:
            return answer
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what or check}")
        time.sleep(0.1)


@dataclass
class Serve:
    process: subprocess.Popen[bytes]
    log: Path
    base: str
    metrics_port: int
    data_dir: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def api_pids(self) -> list[int]:
        """The API processes: spawned children (not the resource tracker, not redis-server)."""
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        pids = []
        for pid in children.read_text().split():
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if b"spawn_main" in cmdline:
                pids.append(int(pid))
        return pids

    def all_children(self) -> list[int]:
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        return [int(pid) for pid in children.read_text().split()]

    def metric(self, index: int, name: str) -> float:
        """Sum of a metric's samples on metrics port + ``index`` (0: the parent)."""
        text = httpx.get(f"http://127.0.0.1:{self.metrics_port + index}/metrics").text
        pattern = re.compile(rf"^{re.escape(name)}(\{{[^}}]*\}})? (\S+)$", re.MULTILINE)
        return sum(float(m.group(2)) for m in pattern.finditer(text))

    def redis(self) -> redis.Redis:
        held = (self.data_dir / "serve.lock").read_text()
        port = int(re.search(r"on port (\d+)", held).group(1))  # type: ignore[union-attr]
        return redis.Redis(port=port, decode_responses=True)


def command(data_dir: Path, port: int, *extra_args: str, **extra_env: str) -> tuple[
    list[str], dict[str, str]
]:  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIGGERS_")}
    env.update({"TRIGGERS_AUTH": "off", "TRIGGERS_DATA_DIR": str(data_dir), **extra_env})
    args = [sys.executable, "-m", "service.cli", "serve", "--port", str(port), *extra_args]
    return args, env


@contextmanager
def serving(tmp_path: Path, workers: int = 2, **extra_env: str) -> Iterator[Serve]:
    port, metrics_port = free_port(), free_ports(workers + 1)
    args, env = command(tmp_path / "data", port, "--workers", str(workers),
                        TRIGGERS_METRICS_PORT=str(metrics_port), **extra_env)  # fmt: skip
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        process = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT)
    serve = Serve(process, log, f"http://127.0.0.1:{port}", metrics_port, tmp_path / "data")
    try:
        ready = f"with {workers} API processes"
        eventually(lambda: ready in serve.output() or process.poll() is not None, what=ready)
        assert process.poll() is None, serve.output()
        yield serve
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


class _Runs(BaseHTTPRequestHandler):
    """The HTTP task: counts its calls per session."""

    calls: ClassVar[Counter[str]] = Counter()
    lock = threading.Lock()

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["content-length"]))
        with self.lock:
            self.calls[self.path] += 1
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: object) -> None:
        pass


def fire_until_both_answered(serve: Serve, uid: str) -> None:
    """Fire (a new connection each time) until both API processes have counted fires: which
    process accepts a connection is the kernel's choice, so an uneven split is possible."""

    def fires_on(index: int) -> float:
        return serve.metric(index, "triggers_fires_total")

    deadline = time.monotonic() + 60
    while min(fires_on(1), fires_on(2)) == 0:
        assert time.monotonic() < deadline, "one API process never got a connection"
        for _ in range(10):
            answer = httpx.post(serve.base + FIRE.format(uid=uid), json={"trigger": "go"})
            assert answer.status_code == 200, answer.text


def gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state == "Z"


@pytest.mark.timeout(240)
def test_two_api_processes_share_the_port_and_one_worker_runs_each_task_once(
    tmp_path: Path,
) -> None:
    task_server = ThreadingHTTPServer(("127.0.0.1", 0), _Runs)
    threading.Thread(target=task_server.serve_forever, daemon=True).start()
    task_url = f"http://127.0.0.1:{task_server.server_address[1]}"
    sessions = 40
    with serving(tmp_path, TRIGGERS_OUTBOUND_ALLOW="127.0.0.1") as serve:
        api_pids = serve.api_pids()
        assert len(api_pids) == 2
        for i in range(sessions):
            config = {"tasks": {"t": {"after": ["go"], "run": f"{task_url}/s{i}"}}}
            answer = httpx.put(f"{serve.base}/sessions/s{i}/config", json=config)
            assert answer.status_code == 200, answer.text

        def fire(i: int) -> int:  # a new connection each: the kernel hands it to either one
            return httpx.post(
                serve.base + FIRE.format(uid=f"s{i}"), json={"trigger": "go"}
            ).status_code

        with ThreadPoolExecutor(8) as pool:
            assert set(pool.map(fire, range(sessions))) == {200}

        def fires_on(index: int) -> float:
            return serve.metric(index, "triggers_fires_total")

        # Together the API processes answered exactly the fires sent, and both took some.
        assert fires_on(1) + fires_on(2) == sessions
        fire_until_both_answered(serve, "s0")

        def all_finished() -> bool:
            for i in range(sessions):
                instances = httpx.get(f"{serve.base}/sessions/s{i}").json()["instances"]
                if instances.get("t#0", {}).get("status") != "finished":
                    return False
            return True

        eventually(all_finished, what="every task finished")
        assert _Runs.calls == Counter({f"/s{i}": 1 for i in range(sessions)})
        # The tasks ran in the parent's worker, not in the API processes.
        assert serve.metric(0, "triggers_instances_total") == sessions
        assert serve.metric(1, "triggers_instances_total") == 0
        assert serve.metric(2, "triggers_instances_total") == 0
        # One worker group, hence one heartbeat and one sweeper: the parent's.
        client = serve.redis()
        try:
            ids = alive_ids(client, "trg")
            assert [i.rpartition(":")[2] for i in ids] == [str(serve.process.pid)]
            assert client.exists("trg:sweeper")
        finally:
            client.close()
        ready = httpx.get(f"{serve.base}/readyz").json()
        assert ready["checks"]["workers"] == "1"
        children = serve.all_children()

        serve.process.send_signal(signal.SIGTERM)
        assert serve.process.wait(60) == 0, serve.output()
    task_server.shutdown()
    output = serve.output()
    assert "SIGTERM: stopping 2 API processes" in output
    assert "embedded Redis stopped" in output
    assert len(children) >= 3  # two API processes and redis-server (and a resource tracker)
    eventually(lambda: all(gone(pid) for pid in children), timeout=30, what="no orphans")


@pytest.mark.timeout(240)
def test_a_killed_api_process_is_replaced_and_the_port_keeps_answering(tmp_path: Path) -> None:
    with serving(tmp_path) as serve:
        first = serve.api_pids()
        victim = first[0]
        os.kill(victim, signal.SIGKILL)
        eventually(
            lambda: f"(pid {victim}) was killed by SIGKILL; starting another" in serve.output(),
            what="the death reported",
        )
        replaced = eventually(
            lambda: (pids := serve.api_pids()) and len(pids) == 2 and victim not in pids and pids,
            what="a new API process",
        )
        assert set(first) - {victim} < set(replaced)
        eventually(lambda: serve.output().count("Application startup complete") >= 3,
                   what="the new one started")  # fmt: skip
        fire_until_both_answered(serve, "k")  # the replacement serves the port too
        serve.process.send_signal(signal.SIGTERM)
        assert serve.process.wait(60) == 0, serve.output()
    eventually(lambda: all(gone(pid) for pid in replaced), timeout=30, what="no orphans")


@pytest.mark.timeout(120)
def test_sigterm_drains_every_api_process(tmp_path: Path) -> None:
    with serving(tmp_path, TRIGGERS_DRAIN_SECONDS="3") as serve:
        serve.process.send_signal(signal.SIGTERM)

        def draining_answers() -> int:
            answer = httpx.get(f"{serve.base}/readyz", timeout=2)
            return answer.status_code == 503 and answer.json()["status"] == "draining"

        eventually(draining_answers, timeout=10, what="/readyz 503 while draining")
        assert serve.process.wait(60) == 0, serve.output()
    assert serve.output().count("Finished server process") == 2


@pytest.mark.timeout(120)
def test_an_api_process_that_cannot_start_stops_serve_with_exit_4(tmp_path: Path) -> None:
    """The app refuses an evicting Redis under TRIGGERS_STRICT_REDIS: restarting would only
    fail again, so serve stops (and its worker and Redis with it)."""
    with RedisServer(extra_config={"maxmemory-policy": "allkeys-lru"}) as server:
        strict = {"TRIGGERS_REDIS_URL": server.url, "TRIGGERS_STRICT_REDIS": "true"}
        args, env = command(tmp_path, free_port(), "--workers", "2", **strict)
        done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 4, done.stderr
    assert "before it was ready: not restarting it; stopping" in done.stderr


@pytest.mark.timeout(60)
@pytest.mark.parametrize("value", ["0", "-1", "two", "1.5"])
def test_a_bad_workers_value_is_one_line_and_exit_2(tmp_path: Path, value: str) -> None:
    args, env = command(tmp_path, free_port(), f"--workers={value}")
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        f"triggers serve: --workers must be a whole number of API processes, 1 or more "
        f"(not {value!r})"
    ]


@pytest.mark.timeout(60)
def test_a_bad_api_workers_setting_is_one_line_and_exit_2(tmp_path: Path) -> None:
    args, env = command(tmp_path, free_port(), TRIGGERS_API_WORKERS="0")
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    [line] = done.stderr.splitlines()
    assert line.startswith("triggers serve: bad setting: TRIGGERS_API_WORKERS")


@pytest.mark.timeout(120)
def test_sigint_stops_every_api_process_without_draining(tmp_path: Path) -> None:
    with serving(tmp_path, TRIGGERS_DRAIN_SECONDS="300") as serve:
        children = serve.all_children()
        serve.process.send_signal(signal.SIGINT)
        assert serve.process.wait(60) == 0, serve.output()
    assert "SIGINT: stopping 2 API processes" in serve.output()
    assert serve.output().count("Finished server process") == 2
    eventually(lambda: all(gone(pid) for pid in children), timeout=30, what="no orphans")


@pytest.mark.timeout(120)
def test_api_processes_stop_when_serve_is_killed(tmp_path: Path) -> None:
    """SIGKILL leaves no API process behind (each sees its pipe to the parent close). The
    embedded Redis is left running, holding the data directory, as with one process."""
    with serving(tmp_path) as serve:
        api_pids = serve.api_pids()
        held = (serve.data_dir / "serve.lock").read_text()
        redis_pid = int(re.search(r"redis-server pid (\d+)", held).group(1))  # type: ignore[union-attr]
        serve.process.kill()
        serve.process.wait(30)
        try:
            eventually(lambda: all(gone(pid) for pid in api_pids), timeout=60, what="API gone")
        finally:
            os.kill(redis_pid, signal.SIGTERM)
