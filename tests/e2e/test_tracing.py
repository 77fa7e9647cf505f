"""One trace across processes: the API's fire, the Dramatiq message, the worker's runs, the
cascade, the HTTP task (which receives ``traceparent``) and the webhook delivery.

The API and the worker are real processes exporting with the SDK's OTLP/HTTP exporter to a
receiver on loopback here, which decodes the protobuf requests (no collector needed)."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.e2e.conftest import TaskServer, new_uid, stack_env, start_api, stop
from tests.e2e.test_execution import ok


@dataclass
class Span:
    service: str
    trace_id: str
    span_id: str
    parent_id: str
    name: str


class Receiver:
    """An OTLP/HTTP trace receiver on 127.0.0.1."""

    def __init__(self) -> None:
        self.spans: list[Span] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                if self.headers.get("content-encoding") == "gzip":
                    body = gzip.decompress(body)
                receiver.add(body)
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def add(self, body: bytes) -> None:
        request = ExportTraceServiceRequest.FromString(body)
        for resource in request.resource_spans:
            attributes = {a.key: a.value.string_value for a in resource.resource.attributes}
            for scope in resource.scope_spans:
                for span in scope.spans:
                    self.spans.append(Span(
                        attributes.get("service.name", "?"), span.trace_id.hex(),
                        span.span_id.hex(), span.parent_span_id.hex(), span.name,
                    ))  # fmt: skip


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    found = Receiver()
    yield found
    found.server.shutdown()


def test_one_trace_from_the_fire_through_workers_to_the_task_and_webhook(
    redis_url: str, tmp_path: Path, receiver: Receiver, task_server: TaskServer
) -> None:
    env = stack_env(redis_url, f"trace-{uuid.uuid4().hex[:8]}", str(tmp_path))
    env.update({"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url, "OTEL_BSP_SCHEDULE_DELAY": "200"})
    api, url = start_api(env)
    worker = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "worker", "--processes", "1", "--threads", "2"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        uid = new_uid()
        task_path, hook = f"/traced/{uid}", f"/traced-hook/{uid}"
        task_server.routes[task_path] = ok({"done": True})
        task_server.routes[hook] = lambda body, headers: (204, {}, b"")
        with httpx.Client(base_url=url, timeout=10) as http:
            assert http.put(f"/sessions/{uid}/config", json={
                "tasks": {"t_http": {"after": ["go"], "run": task_server.url(task_path)},
                          "t_py": {"after": ["t_http"], "run": "echo"}},
                "webhooks": [{"url": task_server.url(hook), "events": ["sessionFinalized"]}],
            }).status_code == 200  # fmt: skip
            assert http.post(f"/sessions/{uid}/fire", json={"trigger": "go"}).status_code == 200
        fires = wait(lambda: [s for s in receiver.spans if s.service == "triggers-api"
                              and s.name == "POST /sessions/{uid}/fire"])  # fmt: skip
        trace = fires[0].trace_id

        def in_trace() -> list[Span]:
            spans = [s for s in receiver.spans if s.trace_id == trace]
            runs = [s for s in spans if s.name == "run_instance"]
            hooks = [s for s in spans if s.name == "deliver_webhook"]
            return spans if len(runs) >= 2 and hooks else []

        try:
            spans = wait(in_trace)
        except AssertionError:
            seen = [(s.service, s.name, s.span_id, s.parent_id) for s in receiver.spans
                    if s.trace_id == trace]  # fmt: skip
            raise AssertionError(f"trace {trace}: spans seen {seen}") from None
        assert {s.service for s in spans} >= {"triggers-api", "triggers-worker"}
        runs = [s for s in spans if s.name == "run_instance"]
        ids = {s.span_id for s in spans}
        assert all(run.parent_id in ids for run in runs)  # continued, not new roots
        [(_, _, headers, _)] = [c for c in task_server.calls if c[0] == task_path]
        assert headers["traceparent"].split("-")[1] == trace  # carried on to the HTTP task
        [(_, _, hook_headers, _)] = [c for c in task_server.calls if c[0] == hook]
        assert hook_headers["traceparent"].split("-")[1] == trace
    finally:
        stop(worker)
        stop(api)


def wait(found: Any, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = found()
        if result:
            return result
        time.sleep(0.2)
    raise AssertionError("timed out waiting for spans")


def test_without_an_endpoint_nothing_of_opentelemetry_is_loaded(redis_url: str) -> None:
    """No cost when tracing is off: the app and the worker's modules load none of the tracing
    SDK, exporter or instrumentations, and messages carry no trace option. (redis-py and
    FastAPI themselves import parts of OpenTelemetry when it is installed, for their own
    optional telemetry: the reason the packages are an extra, `[tracing]`.)"""
    script = (
        "import sys\n"
        "from service.api.app import create_app\n"
        "from service.settings import Settings\n"
        "create_app(Settings(auth='off'))\n"
        "import service.worker.actors\n"
        "from service import tracing\n"
        "assert tracing.message_options() == {}\n"
        "ours = ('opentelemetry.sdk.trace', 'opentelemetry.instrumentation',\n"
        "        'opentelemetry.exporter')\n"
        "print(','.join(m for m in sys.modules if m.startswith(ours)))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "TRIGGERS_"))}
    env["TRIGGERS_REDIS_URL"] = redis_url
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ""
