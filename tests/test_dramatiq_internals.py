"""The Dramatiq internals ActorSender relies on (service/worker/runners.py), checked against the
installed Dramatiq: its batched enqueue leaves in the broker's Redis what ``RedisBroker.enqueue``
leaves (queue list, message hash, delay queue with ``eta``), a real Dramatiq worker consumes
what it sent, and the broker's enqueue command still takes the arguments we pass."""

from __future__ import annotations

import asyncio
import inspect
import time
import uuid
from collections.abc import Iterator
from typing import Any

import dramatiq
import pytest
from dramatiq.brokers.redis import RedisBroker, _RedisConsumer
from dramatiq.message import Message
from redis import Redis

from service.worker.broker import FetchInBatchesBroker
from service.worker.runners import ActorSender, Enqueue


@pytest.fixture
def broker(redis_url: str) -> Iterator[RedisBroker]:
    made = RedisBroker(url=redis_url, namespace=f"dq-{uuid.uuid4().hex[:8]}")  # type: ignore[no-untyped-call]
    yield made
    made.close()


def stored(client: Redis, namespace: str, queue: str) -> tuple[list[Any], dict[str, Any]]:
    ids = client.lrange(f"{namespace}:{queue}", 0, -1)
    messages = client.hgetall(f"{namespace}:{queue}.msgs")
    return ids, {key: Message.decode(value) for key, value in messages.items()}


def test_the_enqueue_command_takes_the_arguments_we_pass() -> None:
    """RedisBroker._dispatch builds ARGV as Enqueue.args does (same names, same order)."""
    source = inspect.getsource(RedisBroker._dispatch)
    source = source[source.index("args = [") :]  # the ARGV list it builds
    order = ["command,", "timestamp,", "queue_name", "self.broker_id", "self.heartbeat_timeout",
             "self.dead_message_ttl", "self._should_do_maintenance(command)",
             "self._max_unpack_size()", "*args"]  # fmt: skip
    positions = [source.find(name) for name in order]
    assert -1 not in positions, positions
    assert positions == sorted(positions)
    assert "dispatch" in RedisBroker(url="redis://127.0.0.1:1").scripts  # type: ignore[no-untyped-call]


@pytest.mark.parametrize("delay_ms", [0, 60_000])
async def test_a_batched_message_is_stored_as_the_broker_stores_it(
    broker: RedisBroker, delay_ms: int
) -> None:
    def probe(value: int) -> None:
        pass

    actor = dramatiq.actor(probe, broker=broker, queue_name="probe")
    sender = ActorSender()
    await sender.send(actor, (1,), delay_ms)
    await sender.drain()
    actor.send_with_options(args=(2,), delay=delay_ms or None)  # the broker's own enqueue
    queue = "probe.DQ" if delay_ms else "probe"
    ids, messages = stored(broker.client, broker.namespace, queue)
    assert len(ids) == 2
    ours, theirs = sorted(messages.values(), key=lambda m: m.args[0])
    assert ours.queue_name == theirs.queue_name == queue
    assert set(ours.options) == set(theirs.options)  # redis_message_id, and eta for a delay
    if delay_ms:
        assert abs(ours.options["eta"] - theirs.options["eta"]) < 30_000
    for message in (ours, theirs):  # each listed under the id it is stored by
        assert message.options["redis_message_id"].encode() in ids


async def test_a_worker_consumes_what_the_sender_batched(broker: RedisBroker) -> None:
    received: list[int] = []

    def collect(value: int) -> None:
        received.append(value)

    actor = dramatiq.actor(collect, broker=broker, queue_name="collect")
    sender = ActorSender()
    await asyncio.gather(*(sender.send(actor, (n,), 50 if n % 2 else 0) for n in range(20)))
    await sender.drain()
    worker = dramatiq.Worker(broker, worker_threads=2, worker_timeout=100)
    worker.start()
    try:
        deadline = time.monotonic() + 60
        while len(received) < 20 and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
    finally:
        worker.stop()
    assert sorted(received) == list(range(20))


def test_enqueue_args_name_the_message_id_and_the_encoded_message(broker: RedisBroker) -> None:
    def probe(value: int) -> None:
        pass

    actor = dramatiq.actor(probe, broker=broker, queue_name="args")
    message = actor.message_with_options(args=(1,))
    message = message.copy(options={"redis_message_id": ActorSender.redis_message_id()})
    args = Enqueue(broker, message, None).args
    assert args[0] == "enqueue" and args[2] == "args"
    assert args[-2] == message.options["redis_message_id"]
    assert Message.decode(args[-1]).args == (1,)


@pytest.fixture
def batching_broker(redis_url: str) -> Iterator[FetchInBatchesBroker]:
    made = FetchInBatchesBroker(url=redis_url, namespace=f"dq-{uuid.uuid4().hex[:8]}")
    yield made
    made.close()


def test_the_consumer_fetches_through_do_fetch_with_the_room_left() -> None:
    """FetchInBatchesBroker overrides do_fetch: the Redis consumer must still call it so."""
    source = inspect.getsource(_RedisConsumer.__next__)
    assert "self.broker.do_fetch(" in source
    assert "self.prefetch - self.outstanding_message_count" in source


def test_a_fetch_for_less_than_a_quarter_of_the_window_waits(
    batching_broker: FetchInBatchesBroker,
) -> None:
    def probe(value: int) -> None:
        pass

    actor = dramatiq.actor(probe, broker=batching_broker, queue_name="few")
    for n in range(6):
        actor.send(n)
    batching_broker.consume("few", prefetch=8, timeout=100)  # its window: 8; least fetch: 2
    assert batching_broker.do_fetch("few", 1) == []  # not asked: the six stay queued
    assert batching_broker.client.llen(f"{batching_broker.namespace}:few") == 6
    assert len(batching_broker.do_fetch("few", 2)) == 2


@pytest.mark.parametrize("threads", [1, 4])
def test_a_worker_on_the_batching_broker_runs_every_message(
    batching_broker: FetchInBatchesBroker, threads: int
) -> None:
    """One thread: a window of two, every free slot fetched; four: fetches of two or more."""
    received: list[int] = []

    def collect(value: int) -> None:
        received.append(value)

    actor = dramatiq.actor(collect, broker=batching_broker, queue_name="all")
    for n in range(50):
        actor.send(n)
    worker = dramatiq.Worker(batching_broker, worker_threads=threads, worker_timeout=50)
    worker.start()
    try:
        deadline = time.monotonic() + 60
        while len(received) < 50 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        worker.stop()
    assert sorted(received) == list(range(50))
