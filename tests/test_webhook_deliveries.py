"""Webhook deliveries that cannot be lost or run away (issue 14, item 5), against a real Redis
and real receivers on loopback, through the worker's own delivery code (WorkerRuntime.deliver,
what the deliver_webhook actor runs).

* any exception during an attempt (a URL with port 99999) is a recorded failed attempt;
* a receiver's answer is read a few KiB at most (a 256 MB answer is not loaded);
* an attempt has a total deadline (a receiver dribbling its answer cannot hold a worker);
* a manual redelivery during a scheduled retry makes one chain of attempts, not two;
* creating a delivery makes its first attempt due in Redis, where the sweeper finds it.

The Redis-restart case runs a real stack: tests/e2e/test_webhook_faults.py.
"""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from service.engine.keys import delivery_keys
from service.settings import Settings
from service.webhooks.store import DeliveryStore
from service.worker.runtime import WorkerRuntime
from tests.conftest import unique_prefix

HUGE = 256 * 1024 * 1024
DEADLINE = 2.0


@dataclass
class Receiver:
    port: int = 0
    calls: list[str] = field(default_factory=list)
    sent: dict[str, int] = field(default_factory=dict)
    answers: list[int] = field(default_factory=list)  # statuses for /flaky, in order

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


def _handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("content-length", 0)))
            receiver.calls.append(self.path)
            if self.path == "/huge":
                self._stream(HUGE, chunk=1024 * 1024, pause=0.0)
            elif self.path == "/dribble":
                self._stream(100, chunk=1, pause=0.3)  # 30 s for the whole answer
            else:
                status = receiver.answers.pop(0) if receiver.answers else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

        def _stream(self, total: int, chunk: int, pause: float) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(total))
            self.end_headers()
            block, sent = b"x" * chunk, 0
            try:
                while sent < total:
                    self.wfile.write(block)
                    self.wfile.flush()
                    sent += chunk
                    receiver.sent[self.path] = sent
                    if pause:
                        time.sleep(pause)
            except OSError:
                pass  # the client went away: what we measure

        def log_message(self, *args: Any) -> None:
            pass

    return Handler


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    found = Receiver()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(found))
    server.daemon_threads = True
    found.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield found
    server.shutdown()
    server.server_close()


@pytest.fixture
async def runtime(redis_url: str, tmp_path: object) -> AsyncIterator[WorkerRuntime]:
    settings = Settings(
        redis_url=redis_url, key_prefix=unique_prefix(), data_dir=str(tmp_path),
        outbound_allow="127.0.0.1", webhook_retry_schedule="5,5", webhook_timeout=DEADLINE,
        manager="default",
    )  # fmt: skip
    made = WorkerRuntime(settings)
    yield made
    await made.aclose()


async def new_delivery(runtime: WorkerRuntime, uid: str, url: str) -> tuple[DeliveryStore, str]:
    await runtime.engine.configure(uid, {"tasks": {"t": {"after": ["go"], "run": "x"}}})
    store = DeliveryStore(runtime.engine)
    delivery_id = "msg_" + "a" * 32
    assert await store.create(uid, delivery_id, url, "sessionFinalized", '{"type":"x"}')
    return store, delivery_id


async def test_a_url_with_port_99999_is_a_recorded_failed_attempt(runtime: WorkerRuntime) -> None:
    store, delivery_id = await new_delivery(runtime, "wh:port", "http://127.0.0.1:99999/hook")
    retry_in = await runtime.deliver("wh:port", delivery_id)
    delivery = await store.get("wh:port", delivery_id)
    # A URL that can never be called is refused by the outbound policy: one recorded failed
    # attempt, and no retry (another attempt could not do better).
    assert delivery is not None and delivery.state == "failed"
    [attempt] = delivery.attempts
    assert attempt.status is None and attempt.error and "Port out of range" in attempt.error
    assert retry_in is None


@pytest.mark.slow
async def test_a_huge_answer_is_not_read(runtime: WorkerRuntime, receiver: Receiver) -> None:
    store, delivery_id = await new_delivery(runtime, "wh:huge", receiver.url("/huge"))
    assert await runtime.deliver("wh:huge", delivery_id) is None
    delivery = await store.get("wh:huge", delivery_id)
    assert delivery is not None and delivery.state == "delivered"
    deadline = time.monotonic() + 30
    while receiver.sent.get("/huge", 0) == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    # The client read a few KiB and hung up: the receiver could push only what the socket
    # buffers hold, nowhere near the 256 MB it announced.
    assert receiver.sent["/huge"] < 64 * 1024 * 1024, receiver.sent


@pytest.mark.slow
async def test_an_attempt_has_a_total_deadline(runtime: WorkerRuntime, receiver: Receiver) -> None:
    store, delivery_id = await new_delivery(runtime, "wh:slow", receiver.url("/dribble"))
    await runtime.deliver("wh:slow", delivery_id)
    delivery = await store.get("wh:slow", delivery_id)
    assert delivery is not None and delivery.state == "retrying"
    [attempt] = delivery.attempts
    assert attempt.error is not None and attempt.error.startswith("Timeout"), attempt
    assert receiver.sent["/dribble"] < 100  # it never got to send its whole answer


async def test_a_redelivery_during_a_scheduled_retry_makes_one_chain(
    runtime: WorkerRuntime, receiver: Receiver
) -> None:
    uid = "wh:chain"
    receiver.answers = [500]
    store, delivery_id = await new_delivery(runtime, uid, receiver.url("/flaky"))
    assert await runtime.deliver(uid, delivery_id, 1) is not None  # 500: a retry in ~5 s
    webhooks: Any = runtime.dispatcher.runners["webhooks"]
    assert await webhooks.redeliver(uid, delivery_id)  # by hand, while the retry waits
    # Both chains' messages arrive: the new one attempts, the scheduled retry's does nothing,
    # now or once its time has come.
    assert await runtime.deliver(uid, delivery_id, 2) is None  # 200: delivered
    assert await runtime.deliver(uid, delivery_id, 1) is None
    delivery = await store.get(uid, delivery_id)
    assert delivery is not None and delivery.state == "delivered"
    assert [a.status for a in delivery.attempts] == [500, 200]
    assert receiver.calls == ["/flaky", "/flaky"]


async def test_a_new_delivery_is_due_in_redis_where_the_sweeper_finds_it(
    runtime: WorkerRuntime,
) -> None:
    uid = "wh:due"
    _, delivery_id = await new_delivery(runtime, uid, "http://127.0.0.1:9/never-sent")
    due_key = delivery_keys(uid, runtime.engine.prefix)[1]
    assert await runtime.engine.client.zscore(due_key, delivery_id) is not None
    found = await runtime.engine.sweep(uid, 0)  # its message was lost: the sweeper re-sends it
    assert found.deliveries == [(delivery_id, 1)]
    assert found.next is not None
