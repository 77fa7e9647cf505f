"""`triggers serve` as a real subprocess: embedded Redis, sessions survive a restart, clean stop."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from service.redis_server import free_port


def start_serve(data_dir: Path, port: int) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIGGERS_")}
    env.update({"TRIGGERS_AUTH": "off", "TRIGGERS_DATA_DIR": str(data_dir)})
    process = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            pass
        if process.poll() is not None:
            break
        time.sleep(0.1)
    process.kill()
    output = process.communicate()[0].decode(errors="replace")
    raise AssertionError(f"triggers serve did not become ready:\n{output}")


def stop(process: subprocess.Popen[bytes], sig: int) -> str:
    process.send_signal(sig)
    output = process.communicate(timeout=30)[0].decode(errors="replace")
    return output


def redis_children_alive(data_dir: Path) -> bool:
    result = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True)
    return str(data_dir / "redis" / "redis.conf") in result.stdout


@pytest.mark.timeout(120)
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_serve_keeps_sessions_across_a_restart(tmp_path: Path, sig: int) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    process = start_serve(tmp_path, port)
    try:
        config = {"tasks": {"t_compare": {"after": ["flora_page3", "fauna_page6"], "run": "P"}}}
        assert httpx.patch(f"{base}/sessions/applicant:7/config", json=config).status_code == 200
        fired = httpx.post(f"{base}/sessions/applicant:7/fire", json={"trigger": "flora_page3"})
        assert fired.status_code == 200
    finally:
        output = stop(process, sig)
    assert "AUTHENTICATION IS OFF" in output
    assert "embedded Redis stopped" in output
    assert not redis_children_alive(tmp_path)
    assert (tmp_path / "redis" / "appendonly.aof").exists()

    process = start_serve(tmp_path, port)
    try:
        session = httpx.get(f"{base}/sessions/applicant:7").json()
        assert session["instances"]["t_compare#0"]["kwargs"] == {"flora_page3": {}}
        fired = httpx.post(f"{base}/sessions/applicant:7/fire", json={"trigger": "fauna_page6"})
        assert fired.json()["scheduled"] == ["t_compare#0"]
    finally:
        stop(process, signal.SIGTERM)
    assert not redis_children_alive(tmp_path)
