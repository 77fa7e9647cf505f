"""Test helpers behind the pytest plugin, usable without pytest too.

* ``EmbeddedService``: ``triggers serve`` as a subprocess on a free loopback port, with its
  embedded Redis and in-process worker, its own data directory, authentication off, outbound
  calls to loopback allowed, and a known webhook secret.
* ``WebhookReceiver``: a loopback HTTP server that verifies and records webhook deliveries.
* ``TaskEndpoint``: a loopback HTTP server answering HTTP tasks as programmed, recording calls.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from triggers_client.errors import WaitTimeout
from triggers_client.models import WebhookEvent

START_TIMEOUT = 90.0  # a loaded machine imports the service slowly


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def triggers_command() -> list[str]:
    """The ``triggers`` command: TRIGGERS_COMMAND, else next to this Python, else on PATH."""
    configured = os.environ.get("TRIGGERS_COMMAND")
    if configured:
        return configured.split()
    beside = Path(sys.executable).parent / "triggers"
    if beside.exists():
        return [str(beside)]
    found = shutil.which("triggers")
    if found:
        return [found]
    raise RuntimeError(
        "no `triggers` command: install the triggers-service package or set TRIGGERS_COMMAND"
    )


def wait_until(check: Callable[[], bool], timeout: float, what: str, poll: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() >= deadline:
            raise WaitTimeout(f"{what} within {timeout} s")
        time.sleep(poll)


class EmbeddedService:
    """A real service: API, embedded Redis and in-process worker, stopped (flushed) on exit."""

    def __init__(self, data_dir: Path, env: Mapping[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.data_dir = data_dir
        self.webhook_secret = new_secret()
        self.log_path = data_dir / "serve.log"
        self.env = {
            key: value for key, value in os.environ.items() if not key.startswith("TRIGGERS_")
        }
        self.env.update({
            "TRIGGERS_AUTH": "off",
            "TRIGGERS_OUTBOUND_ALLOW": "127.0.0.1,localhost",
            "TRIGGERS_DATA_DIR": str(data_dir),
            "TRIGGERS_WEBHOOK_SECRET": self.webhook_secret,
            **(env or {}),
        })  # fmt: skip
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> EmbeddedService:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        command = [*triggers_command(), "serve", "--port", str(self.port), "--log-level", "warning"]
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                command, env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=self.data_dir
            )
        try:
            wait_until(self._ready, START_TIMEOUT, f"triggers serve ready on {self.url}")
        except BaseException:
            self.stop()
            raise
        return self

    def _ready(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise RuntimeError(f"triggers serve exited:\n{self.log()}")
        try:
            return httpx.get(self.url + "/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        """SIGTERM (the API, the worker and Redis stop in order), SIGKILL after 30 s."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)

    def __enter__(self) -> EmbeddedService:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass
class Request:
    """One request a loopback server received."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    verified: bool

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


class _Server:
    """A threaded loopback HTTP server whose requests go to ``handle``."""

    def __init__(self, secret: str | None) -> None:
        self.secret = secret
        self.requests: list[Request] = []
        self.lock = threading.Condition()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length)
                headers = {key.lower(): value for key, value in self.headers.items()}
                request = Request("POST", self.path, headers, body, owner.verify(headers, body))
                status, answer_headers, answer = owner.handle(request)
                with owner.lock:
                    owner.requests.append(request)
                    owner.lock.notify_all()
                payload = b"" if answer is None else json.dumps(answer).encode()
                self.send_response(status)
                for key, value in answer_headers.items():
                    self.send_header(key, value)
                if payload:
                    self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def verify(self, headers: dict[str, str], body: bytes) -> bool:
        if not self.secret:
            return False
        try:
            Webhook(self.secret).verify(body.decode(), headers)
        except (WebhookVerificationError, UnicodeDecodeError):
            return False
        return True

    def handle(self, request: Request) -> tuple[int, dict[str, str], Any]:
        raise NotImplementedError

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def wait_for(
        self, match: Callable[[Request], bool], timeout: float = 60.0, count: int = 1
    ) -> list[Request]:
        """The first ``count`` requests ``match`` accepts, waiting up to ``timeout`` s."""
        deadline = time.monotonic() + timeout
        with self.lock:
            while True:
                found = [r for r in self.requests if match(r)]
                if len(found) >= count:
                    return found[:count]
                left = deadline - time.monotonic()
                if left <= 0:
                    raise WaitTimeout(f"{count} matching request(s) within {timeout} s")
                self.lock.wait(left)


class WebhookReceiver(_Server):
    """Records webhook deliveries; answers 204 when the signature verifies, else 401."""

    @property
    def url(self) -> str:
        """The URL to subscribe (``{"url": receiver.url, "events": [...]}``)."""
        return self.base_url + "/webhooks"

    def handle(self, request: Request) -> tuple[int, dict[str, str], Any]:
        return (204 if request.verified else 401), {}, None

    @property
    def events(self) -> list[WebhookEvent]:
        """The verified deliveries' events, each once (retries share a webhook-id)."""
        seen: dict[str, WebhookEvent] = {}
        with self.lock:
            for request in self.requests:
                if request.verified:
                    seen.setdefault(request.headers["webhook-id"], _event(request))
        return list(seen.values())

    def wait_for_event(
        self, type: str = "sessionFinalized", session: str | None = None, timeout: float = 60.0
    ) -> WebhookEvent:
        def match(request: Request) -> bool:
            if not request.verified:
                return False
            event = _event(request)
            return event.type == type and (session is None or event.session == session)

        return _event(self.wait_for(match, timeout)[0])


def _event(request: Request) -> WebhookEvent:
    return WebhookEvent.model_validate(request.json())


Answer = tuple[int, dict[str, str], Any]
Handler = Callable[[Request], Answer]


class TaskEndpoint(_Server):
    """Serves HTTP tasks: ``url(path)`` to put in a task's ``run``; ``answer(path, ...)`` or
    ``handler(path, fn)`` programs the answers (default 200 ``{}``: the task finishes)."""

    def __init__(self, secret: str | None) -> None:
        super().__init__(secret)
        self.routes: dict[str, list[Handler]] = {}

    def url(self, path: str = "/task") -> str:
        return self.base_url + path

    def answer(
        self,
        path: str,
        status: int = 200,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        *,
        times: int | None = None,
    ) -> None:
        """Answer ``path`` so; ``times=n``: only the next n calls (then the next program)."""
        answer: Answer = (status, dict(headers or {}), {} if body is None else body)
        self._add(path, lambda _request: answer, times)

    def handler(self, path: str, fn: Handler, *, times: int | None = None) -> None:
        """``fn(request) -> (status, headers, json body or None)`` answers ``path``."""
        self._add(path, fn, times)

    def _add(self, path: str, fn: Handler, times: int | None) -> None:
        """Answers for n calls queue up in order, before the standing answer, which a later
        standing answer replaces."""
        with self.lock:
            queue = self.routes.setdefault(path, [])
            once = [h for h in queue if getattr(h, "_once", False)]
            standing = [h for h in queue if not getattr(h, "_once", False)]
            if times is None:
                standing = [fn]
            else:
                once.extend(_once(fn) for _ in range(times))
            self.routes[path] = once + standing

    def handle(self, request: Request) -> Answer:
        path = request.path.split("?", 1)[0]
        with self.lock:
            queue = self.routes.get(path, [])
            fn = queue[0] if queue else None
            if fn is not None and getattr(fn, "_once", False):
                queue.pop(0)
        if fn is None:
            return 200, {}, {}
        return fn(request)

    def calls(self, path: str | None = None) -> list[Request]:
        with self.lock:
            return [r for r in self.requests if path is None or r.path == path]


def _once(fn: Handler) -> Handler:
    def wrapper(request: Request) -> Answer:
        return fn(request)

    wrapper._once = True  # type: ignore[attr-defined]
    return wrapper
