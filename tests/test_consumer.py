"""The asyncio consumer (service/worker/consumer.py) on a real Redis, with Dramatiq's own
producers and workers beside it: it runs what Dramatiq sends (now or delayed), acks it as
Dramatiq does, gives back what it holds when stopped (and a Dramatiq worker then runs it), dead-
letters a failing message, and a message fetched by a worker that died is put back by the
broker's maintenance and run by another. The Dramatiq internals it relies on
(service/worker/redis_queue.py) are checked against the installed Dramatiq.

A worker killed mid-run whose instance another worker finishes exactly once is
tests/e2e/test_faults.py (``triggers worker`` runs this consumer by default)."""

from __future__ import annotations

import asyncio
import inspect
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import dramatiq
import pytest
from dramatiq.brokers.redis import RedisBroker, _RedisConsumer
from dramatiq.message import Message
from dramatiq.worker import ConsumerThread

from service.worker.consumer import AsyncConsumer
from service.worker.redis_queue import BrokerQueues, decode
from service.worker.runners import broker_client
from tests.conftest import engine_on
from tests.test_worker_stop import wait_logged, worker, worker_env

QUEUE = "cq"


@pytest.fixture
def broker(redis_url: str) -> Iterator[RedisBroker]:
    made = RedisBroker(url=redis_url, namespace=f"cq-{uuid.uuid4().hex[:8]}")  # type: ignore[no-untyped-call]
    yield made
    made.close()


def actor(broker: RedisBroker, name: str, body: Callable[..., Any] = print) -> Any:
    """A Dramatiq actor of that name on ``broker``: its body is what a Dramatiq worker runs;
    ours runs the handler of that name."""
    return dramatiq.actor(body, actor_name=name, broker=broker, queue_name=QUEUE, max_retries=0)


@asynccontextmanager
async def consuming(
    broker: RedisBroker, handlers: dict[str, Callable[..., Awaitable[Any]]], runs: int = 2,
    stop_timeout: float = 5.0,
) -> AsyncIterator[AsyncConsumer]:  # fmt: skip
    client = broker_client(broker)
    consumer = AsyncConsumer(broker, BrokerQueues(broker, client), handlers, QUEUE, runs, 20)
    task = asyncio.create_task(consumer.run())
    try:
        yield consumer
    finally:
        consumer.stop(stop_timeout)
        await task
        await client.aclose()


async def until(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.02)


def held_by_workers(broker: RedisBroker) -> int:
    """Messages fetched and not acked, over every worker's ack sets."""
    keys = broker.client.keys(f"{broker.namespace}:__acks__.*")
    return sum(broker.client.scard(key) for key in keys)


def left(broker: RedisBroker, queue: str = QUEUE) -> int:
    return int(broker.client.hlen(f"{broker.namespace}:{queue}.msgs"))


# -- Dramatiq internals ------------------------------------------------------------------------


def test_dispatch_takes_the_commands_and_arguments_we_send() -> None:
    """RedisBroker._dispatch builds ARGV as BrokerQueues.command does; dispatch.lua has the
    commands we use, with the arguments we pass."""
    source = inspect.getsource(RedisBroker._dispatch)
    source = source[source.index("args = [") :]
    order = ["command,", "timestamp,", "queue_name", "self.broker_id", "self.heartbeat_timeout",
             "self.dead_message_ttl", "self._should_do_maintenance(command)",
             "self._max_unpack_size()", "*args"]  # fmt: skip
    positions = [source.find(name) for name in order]
    assert -1 not in positions and positions == sorted(positions), positions
    script = RedisBroker(url="redis://127.0.0.1:1").scripts["dispatch"].script  # type: ignore[no-untyped-call]
    text = script.decode() if isinstance(script, bytes) else script
    for command in ("enqueue", "fetch", "ack", "nack", "requeue"):
        assert f'command == "{command}"' in text, command
    assert "local prefetch = math.min(ARGS[1], max_unpack_size)" in text
    assert "local message_id = ARGS[1]" in text  # ack, nack: one id
    assert "for i=1,#ARGS do" in text  # requeue: any number of ids


def test_dramatiq_consumer_acks_redis_ids_on_the_queue_it_fetched_from() -> None:
    """What BrokerQueues.settle and requeue send: the queue fetched from (a delay queue for a
    delayed message) and the option ``redis_message_id``."""
    for method, command in ((_RedisConsumer.ack, "do_ack"), (_RedisConsumer.nack, "do_nack")):
        source = inspect.getsource(method)
        call = f'self.broker.{command}(self.queue_name, message.options["redis_message_id"])'
        assert call in source
    assert 'message.options["redis_message_id"] for message in messages' in inspect.getsource(
        _RedisConsumer.requeue
    )


def test_dramatiq_moves_a_due_message_to_its_canonical_queue_without_eta() -> None:
    """ConsumerThread.handle_delayed_messages, as BrokerQueues.release_due repeats it."""
    source = inspect.getsource(ConsumerThread.handle_delayed_messages)
    for piece in ("queue_name = q_name(message.queue_name)",
                  "new_message = message.copy(queue_name=queue_name)",
                  'del new_message.options["eta"]', "self.broker.enqueue(new_message)",
                  "self.post_process_message(message)"):  # fmt: skip
        assert piece in source, piece


# -- behaviour ---------------------------------------------------------------------------------


async def test_dramatiq_sent_messages_run_and_are_acked(broker: RedisBroker) -> None:
    seen: list[int] = []

    async def record(value: int) -> None:
        await asyncio.sleep(0.01)
        seen.append(value)

    sender = actor(broker, "record")
    for n in range(50):
        sender.send(n)
    async with consuming(broker, {"record": record}, runs=4):
        await until(lambda: len(seen) == 50)
        await until(lambda: left(broker) == 0)
    assert sorted(seen) == list(range(50))
    assert held_by_workers(broker) == 0


async def test_a_delayed_message_runs_once_due(broker: RedisBroker) -> None:
    ran: list[float] = []
    loop = asyncio.get_running_loop()

    async def record(value: int) -> None:
        ran.append(loop.time())

    sent = loop.time()
    actor(broker, "record").send_with_options(args=(1,), delay=300)
    async with consuming(broker, {"record": record}):
        await until(lambda: len(ran) == 1)
        await until(lambda: left(broker) == 0 and left(broker, f"{QUEUE}.DQ") == 0)
    assert ran[0] - sent >= 0.3
    assert held_by_workers(broker) == 0


async def test_a_failing_message_is_dead_lettered(broker: RedisBroker) -> None:
    async def fail(value: int) -> None:
        raise ValueError("no")

    actor(broker, "fail").send(1)
    async with consuming(broker, {"fail": fail}):
        await until(lambda: broker.client.zcard(f"{broker.namespace}:{QUEUE}.XQ") == 1)
    assert left(broker) == 0
    assert held_by_workers(broker) == 0


async def test_stopping_requeues_what_it_held_and_a_dramatiq_worker_runs_it(
    broker: RedisBroker,
) -> None:
    """One run in flight finishes within the stop timeout; the messages fetched but not run
    (and a delayed one held for its eta) go back to their queues at once, where Dramatiq's own
    worker takes them."""
    release = asyncio.Event()
    started: list[int] = []
    finished: list[int] = []

    async def slow(value: int) -> None:
        started.append(value)
        await release.wait()
        finished.append(value)

    ran: list[int] = []
    sender = actor(broker, "slow", ran.append)  # what Dramatiq's worker runs, below
    for n in range(5):
        sender.send(n)
    sender.send_with_options(args=(99,), delay=600_000)
    async with consuming(broker, {"slow": slow}, runs=1) as consumer:
        await until(lambda: len(started) == 1 and len(consumer.ready) >= 1
                    and len(consumer.delayed) == 1)  # fmt: skip
        asyncio.get_running_loop().call_later(0.2, release.set)  # ends during the stop
    assert finished == started
    assert held_by_workers(broker) == 0  # acked, or given back
    assert broker.client.llen(f"{broker.namespace}:{QUEUE}.DQ") == 1
    requeued = broker.client.llen(f"{broker.namespace}:{QUEUE}")
    assert requeued == 4 - (len(started) - 1)

    worker = dramatiq.Worker(broker, worker_threads=1, worker_timeout=20)
    worker.start()
    try:
        await until(lambda: len(ran) == 4)
    finally:
        worker.stop()
    assert sorted(ran + finished) == [0, 1, 2, 3, 4]


async def test_a_dead_workers_fetched_message_is_put_back_and_run(broker: RedisBroker) -> None:
    """A worker that fetched a message and died (no ack, no heartbeat since) loses nothing:
    the broker's maintenance, run by another worker's commands, puts it back."""
    seen: list[int] = []

    async def record(value: int) -> None:
        seen.append(value)

    actor(broker, "record").send(7)
    dead = RedisBroker(url=None, client=broker.client, namespace=broker.namespace)  # type: ignore[no-untyped-call]
    client = broker_client(broker)
    try:
        fetched = await BrokerQueues(dead, client).fetch(QUEUE, 5)
    finally:
        await client.aclose()
    assert [m.args for m in fetched] == [(7,)]
    broker.client.zadd(f"{broker.namespace}:__heartbeats__", {dead.broker_id: 0})  # long gone
    broker.maintenance_chance = 1_000_000  # every command of the live worker maintains
    async with consuming(broker, {"record": record}):
        await until(lambda: seen == [7])
        await until(lambda: left(broker) == 0)
    assert held_by_workers(broker) == 0


def test_messages_decode_as_dramatiq_decodes_them(broker: RedisBroker) -> None:
    sender = actor(broker, "record")
    message = sender.message_with_options(args=(1, "two", [3], {"4": None}), delay=5)
    data = message.encode()
    assert decode(data) == Message.decode(data)
    assert decode(data).args == (1, "two", [3], {"4": None})


async def test_an_undecodable_message_does_not_hold_up_the_others(broker: RedisBroker) -> None:
    seen: list[int] = []

    async def record(value: int) -> None:
        seen.append(value)

    broker.do_enqueue(QUEUE, "poison", b"not a message")  # type: ignore[attr-defined]
    actor(broker, "record").send(1)
    async with consuming(broker, {"record": record}):
        await until(lambda: seen == [1])


@pytest.mark.parametrize("consumer", ["asyncio", "dramatiq"])
def test_triggers_worker_runs_a_dramatiq_message_with_either_consumer(
    tmp_path: Path, consumer: str
) -> None:
    """`triggers worker` (real processes) takes a run_instance message that Dramatiq's own
    broker sent, runs it (the session does not exist: dropped, as it should be) and acks it;
    TRIGGERS_WORKER_CONSUMER picks the consumer, and a SIGTERM stops either with exit 0."""
    log = tmp_path / "worker.log"
    with worker_env(tmp_path) as env:
        env["TRIGGERS_WORKER_CONSUMER"] = consumer
        namespace = f"{env['TRIGGERS_KEY_PREFIX']}-dramatiq"
        sender = RedisBroker(url=env["TRIGGERS_REDIS_URL"], namespace=namespace)  # type: ignore[no-untyped-call]
        try:
            with worker(env, log, 1) as process:
                kind = "asyncio consumer" if consumer == "asyncio" else "Dramatiq worker"
                assert f"worker started ({kind})" in log.read_text()
                dramatiq.actor(print, actor_name="run_instance", broker=sender,
                               queue_name="triggers").send("nobody", "t#0")  # fmt: skip
                wait_logged(log, "nobody t#0: dropped", 1, process)
                deadline = time.monotonic() + 30
                while sender.client.hlen(f"{namespace}:triggers.msgs"):
                    assert time.monotonic() < deadline, log.read_text()
                    time.sleep(0.05)
                os.killpg(process.pid, signal.SIGTERM)
                assert process.wait(60) == 0, log.read_text()
        finally:
            sender.close()


async def test_messages_of_a_fetch_whose_answer_was_lost_are_put_back(
    broker: RedisBroker,
) -> None:
    """A fetch that Redis ran but whose answer never arrived (the connection failed) left its
    messages in this worker's ack set; the next fetch first puts them back, so they run (the
    sweeper would not re-send them: a live worker holds them)."""
    seen: list[int] = []

    async def record(value: int) -> None:
        seen.append(value)

    sender = actor(broker, "record")
    for n in range(3):
        sender.send(n)
    client = broker_client(broker)
    try:
        taken = await BrokerQueues(broker, client).fetch(QUEUE, 2)  # the answer "lost"
    finally:
        await client.aclose()
    assert len(taken) == 2 and held_by_workers(broker) == 2
    async with consuming(broker, {"record": record}) as consumer:
        consumer._unsure.add(QUEUE)  # what a failed fetch marks
        await until(lambda: sorted(seen) == [0, 1, 2])
        await until(lambda: left(broker) == 0)
    assert held_by_workers(broker) == 0


def probed(env: dict[str, str], uids: list[str], seconds: float) -> RedisBroker:
    """Sessions ``uids`` each with one ``overlap_probe`` instance scheduled (``seconds`` long)
    and its run_instance message queued; the broker that sent them (closed by the caller)."""
    url, prefix = env["TRIGGERS_REDIS_URL"], env["TRIGGERS_KEY_PREFIX"]
    probe = {"cfg": {"key": "probe", "seconds": seconds}}
    config = {"tasks": {"t": {"after": ["go"], "run": "overlap_probe", "withParams": probe}}}

    async def schedule() -> None:
        async with engine_on(url, prefix) as engine:
            for uid in uids:
                await engine.configure(uid, config)
                await engine.fire(uid, "go", {})

    asyncio.run(schedule())
    sender = RedisBroker(url=url, namespace=f"{prefix}-dramatiq")  # type: ignore[no-untyped-call]
    send = dramatiq.actor(print, actor_name="run_instance", broker=sender,  # type: ignore[call-overload]
                          queue_name="triggers").send  # fmt: skip
    for uid in uids:
        send(uid, "t#0")
    return sender


def statuses(env: dict[str, str], uids: list[str]) -> list[str]:
    async def read() -> list[str]:
        async with engine_on(env["TRIGGERS_REDIS_URL"], env["TRIGGERS_KEY_PREFIX"]) as engine:
            return [(await engine.snapshot(uid)).instances["t#0"].status for uid in uids]

    return asyncio.run(read())


def test_a_worker_runs_only_its_threads_tasks_at_once(tmp_path: Path) -> None:
    """`triggers worker --threads 2` holds twice as many runs as threads (consumer.py
    RUNS_PER_THREAD): eight queued instances of an ``async def`` task that takes 0.3 s all
    finish, never more than two running at once (slots.py)."""
    log = tmp_path / "worker.log"
    with worker_env(tmp_path) as env:
        env["TRIGGERS_TASK_MODULES"] = "tests.tasks_for_tests"
        uids = [f"slots:{n}" for n in range(8)]
        sender = probed(env, uids, 0.3)  # queued before the worker starts: fetched at once
        try:
            with worker(env, log, 1):
                deadline = time.monotonic() + 60
                while (done := statuses(env, uids)) != ["finished"] * len(uids):
                    assert time.monotonic() < deadline, (done, log.read_text())
                    time.sleep(0.1)
            seen = [int(n) for n in sender.client.lrange("probe:seen", 0, -1)]
        finally:
            sender.close()
    assert len(seen) == len(uids) and max(seen) == 2, seen


def test_a_stopping_worker_claims_nothing_more_and_requeues_the_runs_waiting_for_a_slot(
    tmp_path: Path,
) -> None:
    """Stopped (SIGTERM) while two 1.5 s tasks run and more runs wait for a slot: the two end,
    the waiting ones claim nothing (their instances stay scheduled) and every message not run
    is back in the queue, none left fetched; the worker exits 0."""
    log = tmp_path / "worker.log"
    with worker_env(tmp_path) as env:
        env["TRIGGERS_TASK_MODULES"] = "tests.tasks_for_tests"
        uids = [f"stop:{n}" for n in range(6)]
        sender = probed(env, uids, 1.5)
        namespace = f"{env['TRIGGERS_KEY_PREFIX']}-dramatiq"
        try:
            with worker(env, log, 1) as process:
                deadline = time.monotonic() + 60
                while sender.client.llen("probe:seen") < 2:
                    assert time.monotonic() < deadline, log.read_text()
                    time.sleep(0.02)
                os.killpg(process.pid, signal.SIGTERM)
                assert process.wait(60) == 0, log.read_text()
            seen = [int(n) for n in sender.client.lrange("probe:seen", 0, -1)]
            # nothing claimed after the stop (two probes starting together may push their
            # counts in either order: each INCRs, then RPUSHes)
            assert sorted(seen) == [1, 2], seen
            assert sorted(statuses(env, uids)) == ["finished"] * 2 + ["scheduled"] * 4
            assert sender.client.hlen(f"{namespace}:triggers.msgs") == 4  # back, not lost
            assert sender.client.llen(f"{namespace}:triggers") == 4
            assert held_by_workers(sender) == 0
        finally:
            sender.close()
