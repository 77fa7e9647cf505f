"""The worker's HTTP client keeps no cookies: one task endpoint's Set-Cookie must not reach
another session's task or webhook request (the client is shared by every session)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest

from service.outbound import OutboundPolicy
from service.outbound_http import connecting_to
from service.settings import Settings
from service.worker.runtime import WorkerRuntime


class CookieSetter(BaseHTTPRequestHandler):
    seen: ClassVar[list[str | None]] = []

    def do_POST(self) -> None:
        self.seen.append(self.headers.get("Cookie"))
        self.send_response(200)
        self.send_header("Set-Cookie", "session=tenant-a; Path=/")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def endpoint() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), CookieSetter)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    CookieSetter.seen = []
    yield f"http://127.0.0.1:{server.server_address[1]}/task"
    server.shutdown()
    server.server_close()


async def test_a_cookie_set_by_one_endpoint_is_not_sent_again(
    redis_url: str, tmp_path: Path, endpoint: str
) -> None:
    runtime = WorkerRuntime(Settings(redis_url=redis_url, data_dir=str(tmp_path)))
    try:
        target = await OutboundPolicy("127.0.0.1").resolve(endpoint)
        for _ in range(2):
            with connecting_to(target):
                answer = await runtime.http.post(target.url, json={})
            assert answer.headers["set-cookie"].startswith("session=tenant-a")
        assert CookieSetter.seen == [None, None]
        assert not runtime.http.cookies
    finally:
        await runtime.aclose()
