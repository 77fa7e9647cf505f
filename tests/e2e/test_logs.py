"""Structured logs of real processes: JSON lines with the request's and the run's context,
X-Request-ID echoed or generated, no kwargs (only their size) in any line, and no line per
request unless the access log is asked for (TRIGGERS_ACCESS_LOG)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from service.redis_server import free_port
from tests.e2e.conftest import new_uid, stack_env, stop, wait_http

SECRET_VALUE = "s3cr3t-" + uuid.uuid4().hex


def json_lines(path: Path) -> list[dict[str, Any]]:
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    return [json.loads(line) for line in lines]  # every line is one JSON object


def wait_until(check: Any, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def serve_logging_to(env: dict[str, str], log: Path) -> tuple[subprocess.Popen[bytes], str]:
    """`triggers serve` at its default log level, everything it prints in ``log``; once ready,
    the process and its URL (conftest's start_api discards the output)."""
    port = free_port()
    with log.open("wb") as output:
        api = subprocess.Popen(
            [sys.executable, "-m", "service.cli", "serve", "--port", str(port)],
            env=env, stdout=output, stderr=output,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url + "/readyz", api)
    except BaseException:
        stop(api)
        raise
    return api, url


def test_json_logs_carry_context_and_never_kwargs(redis_url: str, tmp_path: Path) -> None:
    env = stack_env(redis_url, f"logs-{uuid.uuid4().hex[:8]}", str(tmp_path))
    env["TRIGGERS_LOG_FORMAT"] = "json"
    env["TRIGGERS_ACCESS_LOG"] = "true"  # the request's lines: its access line
    api_log, worker_log = tmp_path / "api.log", tmp_path / "worker.log"
    api, url = serve_logging_to(env, api_log)
    with worker_log.open("wb") as worker_err:
        worker = subprocess.Popen(
            [sys.executable, "-m", "service.cli", "worker", "--processes", "1", "--threads", "2"],
            env=env, stdout=worker_err, stderr=worker_err, start_new_session=True,
        )  # fmt: skip
    try:
        uid = new_uid()
        with httpx.Client(base_url=url, timeout=10) as http:
            configured = http.put(
                f"/sessions/{uid}/config", json={"tasks": {"t_a": {"after": ["go"], "run": "echo"}}}
            )
            assert configured.status_code == 200
            generated = configured.headers["x-request-id"]
            assert len(generated) == 32
            fired = http.post(
                f"/sessions/{uid}/fire",
                headers={"X-Request-ID": "req-42"},
                json={"trigger": "go", "kwargs": {"password": SECRET_VALUE}},
            )
            assert fired.status_code == 200 and fired.headers["x-request-id"] == "req-42"
            bad = http.get("/livez", headers={"X-Request-ID": "no spaces allowed"})
            assert bad.headers["x-request-id"] != "no spaces allowed"

        def ended() -> list[dict[str, Any]]:
            return [e for e in json_lines(worker_log) if e.get("event") == "instance finished"]

        [run] = wait_until(ended)
        assert run["uid"] == uid and run["instance"] == "t_a#0" and run["task"] == "t_a"
        assert run["attempt"] == 1 and run["kwargs_bytes"] > 0 and run["level"] == "info"
        fire_lines = wait_until(lambda: [e for e in json_lines(api_log)
                                         if e.get("request_id") == "req-42"])  # fmt: skip
        assert fire_lines and all(e["uid"] == uid for e in fire_lines)
        assert any(e.get("trigger") == "go" for e in fire_lines)
    finally:
        stop(worker)
        stop(api)
    for path in (api_log, worker_log):
        json_lines(path)  # still JSON, shutdown included
        assert SECRET_VALUE not in path.read_text()


def test_no_line_per_request_by_default(redis_url: str, tmp_path: Path) -> None:
    """At the default level and settings, requests (fires included) log nothing: a formatted
    line per request cost more CPU than all of the request's metrics (bench/observability.py).
    The request metrics still count them."""
    env = stack_env(redis_url, f"quiet-{uuid.uuid4().hex[:8]}", str(tmp_path))
    env["TRIGGERS_LOG_FORMAT"] = "json"
    api_log = tmp_path / "api.log"
    api, url = serve_logging_to(env, api_log)
    try:
        uid = new_uid()
        with httpx.Client(base_url=url, timeout=10) as http:
            config = {"tasks": {"t_a": {"after": ["go"], "andEvery": "go", "run": "echo"}}}
            assert http.put(f"/sessions/{uid}/config", json=config).status_code == 200
            for _ in range(5):
                fired = http.post(f"/sessions/{uid}/fire", json={"trigger": "go"},
                                  headers={"X-Request-ID": "quiet-fire"})  # fmt: skip
                assert fired.status_code == 200, fired.text
            counted = http.get("/metrics").text
        assert 'route="/sessions/{uid}/fire",status="200"} 5.0' in counted
    finally:
        stop(api)
    lines = json_lines(api_log)
    assert lines  # the server did log (start-up, shutdown)
    assert not [e for e in lines if e.get("request_id") or e.get("logger") == "uvicorn.access"]
