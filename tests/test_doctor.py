"""`triggers doctor` against real Redis servers: it flags eviction, and passes a healthy
deployment (noeviction, append-only file, a live worker)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

from redis import Redis

from service.redis_server import RedisServer


def doctor(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "service.cli", "doctor"], env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip


def base_env(url: str, data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIGGERS_")}
    env.update(
        {
            "TRIGGERS_REDIS_URL": url,
            "TRIGGERS_KEY_PREFIX": f"doc-{uuid.uuid4().hex[:8]}",
            "TRIGGERS_DATA_DIR": str(data_dir),
            "TRIGGERS_HEARTBEAT_INTERVAL": "0.5",
        }
    )
    return env


def line(output: str, check: str) -> str:
    [found] = [text for text in output.splitlines() if text[5:].startswith(check + ":")]
    return found


def test_doctor_flags_a_redis_with_eviction_on(tmp_path: Path) -> None:
    with RedisServer() as server:
        Redis.from_url(server.url).config_set("maxmemory-policy", "allkeys-lru")
        result = doctor(base_env(server.url, tmp_path))
    assert result.returncode == 1, result.stdout + result.stderr
    assert line(result.stdout, "maxmemory-policy").startswith("FAIL")
    assert "allkeys-lru" in line(result.stdout, "maxmemory-policy")
    assert line(result.stdout, "workers").startswith("FAIL")  # none started
    assert line(result.stdout, "clock").startswith("OK")


def test_doctor_passes_a_healthy_deployment(tmp_path: Path) -> None:
    with RedisServer(appendonly=True, data_dir=tmp_path / "redis",
                     extra_config={"maxmemory": "512mb"}) as server:  # fmt: skip
        env = base_env(server.url, tmp_path)
        worker = subprocess.Popen(
            [sys.executable, "-m", "service.cli", "worker", "--processes", "1", "--threads", "1"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 60
            while True:
                result = doctor(env)
                if result.returncode == 0 or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
        finally:
            os.killpg(worker.pid, signal.SIGTERM)
            worker.wait(30)
    assert result.returncode == 0, result.stdout + result.stderr
    for check in ("redis", "maxmemory-policy", "aof", "memory", "workers", "signing secret",
                  "clock", "outbox backlog", "broker"):  # fmt: skip
        assert line(result.stdout, check).startswith("OK"), result.stdout
