"""Helpers for fault tests that need a stack of their own (their own settings, worker threads
or state Redis) and loopback endpoints that misbehave slowly: one that trickles its answer a
byte at a time, one that holds each call for a while and counts how many run at once."""

from __future__ import annotations

import contextlib
import json
import select
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tests.e2e.conftest import Stack, stack_env, start_api, stop


@contextlib.contextmanager
def isolated_stack(
    redis_url: str, data_dir: Path, *, threads: int = 4, **env: str
) -> Iterator[Stack]:
    """An API process and one worker process on a key prefix (and broker namespace) of their
    own, with ``env`` (``TRIGGERS_...``) added to the usual test settings."""
    prefix = f"iso-{uuid.uuid4().hex[:8]}"
    data_dir.mkdir(parents=True, exist_ok=True)
    environment = {**stack_env(redis_url, prefix, str(data_dir)), **env}
    api, url = start_api(environment)
    stack = Stack(url, prefix, environment, api, [])
    try:
        stack.start_worker(threads)
        yield stack
    finally:
        for process in [*stack.workers, api]:
            stop(process)


@dataclass
class SlowEndpoints:
    """``/trickle/...``: 200 with a 20-byte JSON body sent one byte every ``trickle_every``
    seconds. ``/hold/<seconds>/...``: a first attempt is answered ``{"attempt": 1}`` after that
    many seconds, or abandoned as soon as the client closes the connection; later attempts at
    once. Every call is recorded; ``running``/``most_at_once`` count the calls in progress per
    path, ``ended`` says how each call ended (answered or abandoned) and when."""

    trickle_every: float = 2.0
    port: int = 0
    calls: list[tuple[str, dict[str, Any], float]] = field(default_factory=list)
    ended: list[tuple[str, str, float]] = field(default_factory=list)
    running: dict[str, int] = field(default_factory=dict)
    most_at_once: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def enter(self, path: str, body: dict[str, Any]) -> None:
        with self.lock:
            self.calls.append((path, body, time.time()))
            self.running[path] = self.running.get(path, 0) + 1
            self.most_at_once[path] = max(self.most_at_once.get(path, 0), self.running[path])

    def leave(self, path: str, how: str) -> None:
        with self.lock:
            self.running[path] -= 1
            self.ended.append((path, how, time.time()))

    def calls_to(self, path: str) -> list[dict[str, Any]]:
        return [body for p, body, _ in self.calls if p == path]


def _handler(endpoints: SlowEndpoints) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            length = int(self.headers.get("content-length", 0))
            body = json.loads(self.rfile.read(length) or b"{}")
            endpoints.enter(self.path, body)
            how = "answered"
            try:
                if self.path.startswith("/trickle"):
                    self._trickle()
                elif self._held(float(self.path.split("/")[2]) if body["attempt"] == 1 else 0):
                    self._answer(json.dumps({"attempt": body["attempt"]}).encode())
                else:
                    how = "abandoned"
            except OSError:  # the client went away (its deadline, a cancelled run)
                how = "abandoned"
            finally:
                endpoints.leave(self.path, how)

        def _held(self, seconds: float) -> bool:
            """Waits ``seconds``; False as soon as the client closes its connection."""
            until = time.monotonic() + seconds
            while time.monotonic() < until:
                readable, _, _ = select.select([self.connection], [], [], 0.05)
                if readable and not self.connection.recv(1, socket.MSG_PEEK):
                    return False
            return True

        def _answer(self, content: bytes) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(content)))
            self.end_headers()
            self.wfile.write(content)
            self.wfile.flush()

        def _trickle(self) -> None:
            content = b" " * 18 + b"{}"
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(content)))
            self.end_headers()
            self.wfile.flush()
            for byte in content:
                time.sleep(endpoints.trickle_every)
                self.wfile.write(bytes([byte]))
                self.wfile.flush()

        def log_message(self, *args: Any) -> None:
            pass

    return Handler


@contextlib.contextmanager
def slow_endpoints(**options: Any) -> Iterator[SlowEndpoints]:
    endpoints = SlowEndpoints(**options)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(endpoints))
    server.daemon_threads = True
    endpoints.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield endpoints
    finally:
        server.shutdown()
        server.server_close()
