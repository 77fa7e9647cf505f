"""Slow clients cannot hold connections: raw sockets trickle bytes into a real `triggers serve`.

Header and body trickles used to keep a connection (and its buffers) open for as long as the
client liked. With TRIGGERS_HEADER_TIMEOUT and TRIGGERS_BODY_TIMEOUT set to 2 s the service
answers 408 and closes; the test allows up to 30 s for that (a loaded machine), while the
trickle itself would go on for minutes.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest

from service.redis_server import free_port
from tests.conftest import unique_prefix

CAP = 30.0  # seconds a trickle may last before the test gives up on the server closing it


@pytest.fixture(scope="module")
def served(redis_url: str) -> Iterator[int]:
    """`triggers serve` (API only, on the test Redis) with 2 s header and body deadlines."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIGGERS_")}
    env.update({
        "TRIGGERS_AUTH": "off", "TRIGGERS_REDIS_URL": redis_url,
        "TRIGGERS_KEY_PREFIX": unique_prefix(), "TRIGGERS_HEADER_TIMEOUT": "2",
        "TRIGGERS_BODY_TIMEOUT": "2",
    })  # fmt: skip
    process = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "serve", "--port", str(port)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and process.poll() is None:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        else:
            raise AssertionError("triggers serve did not become ready")
        yield port
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)


def trickle(port: int, head: bytes, drip: bytes) -> tuple[bytes, float]:
    """Send ``head`` at once, then ``drip`` one byte every 0.2 s, until the server answers and
    closes (or CAP passes). Returns what the server sent and how long the connection lasted."""
    started = time.monotonic()
    received = b""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.settimeout(0.2)
        if head:
            sock.sendall(head)
        position = 0
        while time.monotonic() - started < CAP:
            try:
                chunk = sock.recv(65536)
                if not chunk:
                    return received, time.monotonic() - started
                received += chunk
                continue
            except TimeoutError:
                pass
            except ConnectionResetError:
                return received, time.monotonic() - started
            if drip:
                try:
                    sock.send(drip[position % len(drip) : position % len(drip) + 1])
                except (BrokenPipeError, ConnectionResetError):
                    return received, time.monotonic() - started
                position += 1
    raise AssertionError(f"the connection was still open after {CAP} s; received {received!r}")


def problem_of(answer: bytes) -> dict[str, object]:
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408"), answer
    assert b"connection: close" in head.lower(), answer
    problem: dict[str, object] = json.loads(body)
    return problem


def test_a_header_trickle_gets_408_and_is_closed(served: int) -> None:
    head = b"POST /sessions/s:1/fire HTTP/1.1\r\nHost: localhost\r\n"
    answer, _ = trickle(served, head, b"X-Slow: " + b"a" * 10_000)
    assert problem_of(answer)["type"] == "/problems/request-timeout"


def test_a_header_trickle_after_a_served_request_gets_408(served: int) -> None:
    """The deadline restarts with each request on a kept-alive connection."""
    head = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\nGET /healthz HTTP/1.1\r\n"
    answer, _ = trickle(served, head, b"X-Slow: " + b"a" * 10_000)
    first, _, rest = answer.partition(b"HTTP/1.1 408")
    assert first.startswith(b"HTTP/1.1 200"), answer
    assert problem_of(b"HTTP/1.1 408" + rest)["type"] == "/problems/request-timeout"


def test_a_silent_connection_is_closed_without_an_answer(served: int) -> None:
    answer, _ = trickle(served, b"", b"")
    assert answer == b""


def test_a_body_trickle_gets_408_naming_the_body_and_is_closed(served: int) -> None:
    uid = unique_prefix()
    head = (
        f"POST /sessions/{uid}/fire HTTP/1.1\r\nHost: localhost\r\n"
        "Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n"
    ).encode()
    answer, _ = trickle(served, head, b'{"trigger": "go", "kwargs": {"x": "' + b"a" * 99_000)
    problem = problem_of(answer)
    assert problem["type"] == "/problems/request-timeout"
    assert problem["errors"] == [{"field": "body", "message": problem["detail"]}]
    session = httpx.get(f"http://127.0.0.1:{served}/sessions/{uid}", timeout=10)
    assert session.status_code == 404  # nothing stored


def test_prompt_clients_on_a_kept_alive_connection_are_served(served: int) -> None:
    with httpx.Client(base_url=f"http://127.0.0.1:{served}", timeout=10) as client:
        for _ in range(3):
            assert client.get("/healthz").status_code == 200
            time.sleep(1)  # idle less than the keep-alive timeout between requests
        uid = unique_prefix()
        fired = client.post(f"/sessions/{uid}/fire", json={"trigger": "go"})
        assert fired.status_code == 200, fired.text
