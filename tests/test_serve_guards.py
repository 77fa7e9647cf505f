"""`triggers serve` refuses to share: one data directory per service, one service per port.

Two embedded Redis servers on one append-only file would each see only their own sessions and
merge them after a restart; a second serve on a busy port used to start (and leave) a Redis
before failing. Real subprocesses throughout.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from service.redis_server import free_port
from tests.test_serve import start_serve, stop

EXIT_CANNOT_START = 4


def serve_command(data_dir: Path, port: int, **extra: str) -> subprocess.Popen[bytes]:
    """A `triggers serve` that is expected to fail: not waited for."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIGGERS_")}
    env.update({"TRIGGERS_AUTH": "off", "TRIGGERS_DATA_DIR": str(data_dir), **extra})
    return subprocess.Popen(
        [sys.executable, "-m", "service.cli", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def finish(process: subprocess.Popen[bytes], timeout: float = 60) -> tuple[int, str]:
    """Wait for a serve that should stop by itself; kill it (and fail) if it does not."""
    try:
        _, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=30)
        raise AssertionError("the second triggers serve kept running") from None
    return process.returncode, err.decode(errors="replace")


def redis_servers_on(data_dir: Path) -> int:
    """redis-server processes working in the data directory (Redis chdirs to its `dir` and
    rewrites its title to host:port, so the working directory is what names its folder)."""
    folder = str((data_dir / "redis").resolve())
    count = 0
    for proc in Path("/proc").iterdir():
        try:
            if (
                b"redis-server" in (proc / "cmdline").read_bytes()
                and os.readlink(proc / "cwd") == folder
            ):
                count += 1
        except OSError:
            continue
    return count


@pytest.mark.timeout(180)
def test_a_second_serve_on_the_same_data_dir_fails_at_once(tmp_path: Path) -> None:
    port = free_port()
    first = start_serve(tmp_path, port)
    try:
        code, err = finish(serve_command(tmp_path, free_port()))
        assert code == EXIT_CANNOT_START
        lines = err.strip().splitlines()
        assert len(lines) == 1, err
        assert "in use" in lines[0] and str(tmp_path.resolve()) in lines[0]
        assert redis_servers_on(tmp_path) == 1
        assert httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5).status_code == 200
    finally:
        stop(first, signal.SIGTERM)
    assert redis_servers_on(tmp_path) == 0
    # Released with the service: the next start on the same folder works.
    again = start_serve(tmp_path, port)
    stop(again, signal.SIGTERM)


@pytest.mark.timeout(180)
def test_an_orphaned_embedded_redis_keeps_its_data_dir_locked(tmp_path: Path) -> None:
    """SIGKILL leaves the Redis child running on the append-only file: it holds the lock, so
    a new serve does not start a second Redis on the same file."""
    first = start_serve(tmp_path, free_port())
    first.kill()
    first.communicate(timeout=30)
    pid_line = (tmp_path / "serve.lock").read_text()
    redis_pid = int(pid_line.split("redis-server pid ")[1].split()[0])
    try:
        code, err = finish(serve_command(tmp_path, free_port()))
        assert code == EXIT_CANNOT_START
        assert f"redis-server pid {redis_pid}" in err
        assert redis_servers_on(tmp_path) == 1
    finally:
        os.kill(redis_pid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    while redis_servers_on(tmp_path) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert redis_servers_on(tmp_path) == 0


@pytest.mark.timeout(120)
def test_a_busy_port_fails_before_redis_is_started(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code, err = finish(serve_command(tmp_path, port))
    assert code == EXIT_CANNOT_START
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert str(port) in lines[0] and "--port" in lines[0]
    assert not (tmp_path / "redis" / "redis.conf").exists()


@pytest.mark.timeout(120)
def test_an_unusable_data_dir_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    code, err = finish(serve_command(tmp_path / "a-file" / "data", free_port()))
    assert code == EXIT_CANNOT_START
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "TRIGGERS_DATA_DIR" in lines[0], err
