"""What the examples share: starting their HTTP task server (Python or Node) and receiving the
service's webhooks. Each example's run.py puts this folder on sys.path and imports it.

Settings, as for any client: TRIGGERS_URL (default http://127.0.0.1:8000), TRIGGERS_API_KEY,
and the webhook secret: TRIGGERS_WEBHOOK_SECRET, else the copy the service keeps in
``.triggers/webhook-secret`` (TRIGGERS_DATA_DIR) when it runs from this repository.
"""

from __future__ import annotations

import os
import queue
import secrets
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from triggers_client import InvalidWebhook, WebhookEvent, verify_webhook

REPOSITORY = Path(__file__).resolve().parents[2]


def webhook_secret() -> str:
    """The service's signing secret (the HTTP tasks' and the webhooks')."""
    if os.environ.get("TRIGGERS_WEBHOOK_SECRET"):
        return os.environ["TRIGGERS_WEBHOOK_SECRET"]
    data_dir = Path(os.environ.get("TRIGGERS_DATA_DIR", REPOSITORY / ".triggers"))
    return (data_dir / "webhook-secret").read_text().strip()


def run_id() -> str:
    """A fresh id per run, so running an example twice never meets the first run's sessions."""
    return secrets.token_hex(4)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_listening(port: int, process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the task server exited with {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"the task server did not listen on {port} within {timeout} s")


@contextmanager
def task_server(example: Path, language: str) -> Iterator[str]:
    """Runs the example's tasks.py or tasks.js on a free loopback port; yields its base URL."""
    port = free_port()
    if language == "python":
        command = [sys.executable, str(example / "tasks.py"), str(port)]
    else:
        node = shutil.which("node")
        if node is None:
            raise RuntimeError("the Node task server needs node (apt-get install nodejs)")
        command = [node, str(example / "tasks.js"), str(port)]
    env = {**os.environ, "TRIGGERS_WEBHOOK_SECRET": webhook_secret()}
    process = subprocess.Popen(command, env=env)
    try:
        _wait_listening(port, process)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)


class WebhookReceiver:
    """The application's webhook endpoint: verifies each delivery (401 when it does not),
    handles each ``webhook-id`` once (retries repeat it) and queues the events."""

    def __init__(self, secret: str) -> None:
        self.events: queue.Queue[WebhookEvent] = queue.Queue()
        seen: set[str] = set()
        lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                try:
                    event = verify_webhook(dict(self.headers.items()), body, secret)
                except InvalidWebhook:
                    self.send_response(401)
                    self.end_headers()
                    return
                with lock:
                    first = self.headers["webhook-id"] not in seen
                    seen.add(self.headers["webhook-id"])
                if first:
                    receiver.events.put(event)
                self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/webhooks"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def next_event(self, timeout: float = 60) -> WebhookEvent:
        return self.events.get(timeout=timeout)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
