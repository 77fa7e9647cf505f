"""`triggers worker --processes 2` stops on SIGTERM however many copies arrive.

Under dumb-init (the image's entrypoint) every worker process gets SIGTERM twice: dumb-init
signals the whole process group and the parent forwards it to its children. The children once
set a threading.Event from a Python signal handler; a second signal landing inside the first
handler's lock deadlocked the child, which then ignored SIGTERM until podman's SIGKILL (CI's
container test caught it). A burst of signals to the group gives that window many chances:
the old code hung in about one trial of five here.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from service.redis_server import RedisServer

PROCESSES = 2


def wait_logged(log: Path, text: str, count: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 90
    while log.read_text().count(text) < count:
        assert process.poll() is None, log.read_text()
        assert time.monotonic() < deadline, f"{count} x {text!r} not logged:\n{log.read_text()}"
        time.sleep(0.1)


@contextmanager
def worker_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    """The environment of a `triggers worker` on a Redis server of its own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIGGERS_")}
    with RedisServer() as server:
        env.update(TRIGGERS_REDIS_URL=server.url, TRIGGERS_KEY_PREFIX=uuid.uuid4().hex[:8],
                   TRIGGERS_DATA_DIR=str(tmp_path))  # fmt: skip
        yield env


@contextmanager
def worker(env: dict[str, str], log: Path, processes: int) -> Iterator[subprocess.Popen[bytes]]:
    """`triggers worker --processes N` in a process group of its own, its log in ``log``,
    once every process logged "worker started"; SIGKILLed on the way out if still running."""
    with log.open("wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "service.cli", "worker",
             "--processes", str(processes), "--threads", "2"],
            env=env, stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True,
        )  # fmt: skip
    try:
        wait_logged(log, "worker started", processes, process)
        yield process
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def test_a_burst_of_sigterms_stops_every_worker_process_with_exit_0(tmp_path: Path) -> None:
    with worker_env(tmp_path) as env:
        for trial in range(4):
            log = tmp_path / f"worker-{trial}.log"
            with worker(env, log, PROCESSES) as process:
                for _ in range(200):  # the group (children too), as dumb-init signals it
                    os.killpg(process.pid, signal.SIGTERM)
                code = process.wait(60)
            output = log.read_text()
            assert code == 0, f"trial {trial}: exit {code}\n{output}"
            assert output.count("Worker has been shut down") == PROCESSES, output


def test_a_worker_stopped_and_continued_keeps_running(tmp_path: Path) -> None:
    """SIGSTOP then SIGCONT (a debugger, a container pause, bench/pipeline.py holding the
    worker) is not a stop request: CPython's sigtimedwait, interrupted past its deadline by the
    continue, returned a garbage siginfo and the parent ended its children."""
    log = tmp_path / "worker.log"
    with worker_env(tmp_path) as env, worker(env, log, 1) as process:
        os.killpg(process.pid, signal.SIGSTOP)
        time.sleep(1.5)  # past the parent's old 0.5 s wait
        os.killpg(process.pid, signal.SIGCONT)
        time.sleep(2)  # the old parent ended its child at once
        assert process.poll() is None, log.read_text()
        assert "Worker has been shut down" not in log.read_text()
        os.killpg(process.pid, signal.SIGTERM)
        code = process.wait(60)
    assert code == 0, log.read_text()
    assert log.read_text().count("Worker has been shut down") == 1
