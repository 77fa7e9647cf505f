"""`triggers serve` as a real subprocess: embedded Redis, sessions survive a restart, clean stop."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from service.redis_server import free_port


def start_serve(data_dir: Path, port: int, **extra: str) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIGGERS_")}
    env.update({"TRIGGERS_AUTH": "off", "TRIGGERS_DATA_DIR": str(data_dir), **extra})
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


class _Echo(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        answer = json.dumps({"echo": body["kwargs"]}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.timeout(120)
def test_the_quick_start_runs_tasks_with_nothing_else_started(tmp_path: Path) -> None:
    """Embedded mode: Redis, API and an in-process worker from one command."""
    echo = ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    threading.Thread(target=echo.serve_forever, daemon=True).start()
    task_url = f"http://127.0.0.1:{echo.server_address[1]}/compare"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    process = start_serve(tmp_path, port, TRIGGERS_OUTBOUND_ALLOW="127.0.0.1")
    try:
        config = {"tasks": {
            "t_compare": {"after": ["flora_page3", "fauna_page6"], "run": task_url},
            "t_report": {"after": ["t_compare"], "run": task_url},
        }}  # fmt: skip
        assert httpx.put(f"{base}/sessions/applicant:1/config", json=config).status_code == 200
        for trigger in ("fauna_page6", "flora_page3"):
            httpx.post(f"{base}/sessions/applicant:1/fire", json={"trigger": trigger})
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            instances = httpx.get(f"{base}/sessions/applicant:1").json()["instances"]
            if instances.get("t_report#0", {}).get("status") == "finished":
                break
            time.sleep(0.1)
        assert instances["t_compare#0"]["status"] == "finished"
        assert instances["t_report#0"]["metadata"]["result"] == {
            "echo": {"t_compare": {"echo": {"flora_page3": {}, "fauna_page6": {}}}}
        }
    finally:
        stop(process, signal.SIGTERM)
        echo.shutdown()
    assert not redis_children_alive(tmp_path)


@pytest.mark.timeout(60)
def test_a_broker_that_is_down_costs_no_error_and_no_work(tmp_path: Path, redis_url: str) -> None:
    """The change is committed before the hand-over; if the broker is unreachable the answer is
    still 200 and the instance waits in the outbox for the sweeper."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    process = start_serve(tmp_path, port, TRIGGERS_REDIS_URL=redis_url,
                          TRIGGERS_BROKER_URL="redis://127.0.0.1:1/0",
                          TRIGGERS_KEY_PREFIX="brokerdown")  # fmt: skip
    try:
        config = {"tasks": {"t": {"after": ["go"], "run": "echo"}}}
        assert httpx.put(f"{base}/sessions/s:1/config", json=config).status_code == 200
        fired = httpx.post(f"{base}/sessions/s:1/fire", json={"trigger": "go"}, timeout=30)
        assert fired.status_code == 200 and fired.json()["scheduled"] == ["t#0"]
        session = httpx.get(f"{base}/sessions/s:1").json()
        assert session["instances"]["t#0"]["status"] == "scheduled"
    finally:
        stop(process, signal.SIGTERM)
