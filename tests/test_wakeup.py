"""Wake-ups (service/worker/wakeup.py) on a real Redis: our producers push a bounded, expiring
token list beside the queue; an idle asyncio consumer blocked in BLPOP runs a message as soon
as it is sent or released from the delay queue, not at its poll (here a minute, longer than
every deadline below); a stop does not wait for the poll."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from dramatiq.brokers.redis import RedisBroker

from service.worker.consumer import AsyncConsumer
from service.worker.redis_queue import BrokerQueues
from service.worker.runners import ActorSender, broker_client, broker_options
from service.worker.wakeup import MAX_TOKENS, TOKEN_TTL_MS, Waiter, waiter_client, wake_key
from tests.test_consumer import QUEUE, actor, broker, until

__all__ = ["broker"]  # the fixture, shared with tests/test_consumer.py

POLL_MS = 60_000


@asynccontextmanager
async def waiting_consumer(
    broker: RedisBroker, ran: list[str], poll_ms: int = POLL_MS
) -> AsyncIterator[AsyncConsumer]:
    """An asyncio consumer with a waiter, blocked in BLPOP once it found the queue empty."""

    async def record(text: str) -> None:
        ran.append(text)

    client = broker_client(broker)
    waiter = Waiter(waiter_client(broker_options(broker), poll_ms / 1000), broker.namespace,
                    QUEUE)  # fmt: skip
    consumer = AsyncConsumer(broker, BrokerQueues(broker, client), {"w": record}, QUEUE, 2,
                             poll_ms, waiter)  # fmt: skip
    task = asyncio.create_task(consumer.run())
    try:
        await until(lambda: blocked(broker), timeout=30)
        yield consumer
    finally:
        consumer.stop(5.0)
        await task
        await client.aclose()
        await waiter.aclose()


def blocked(broker: RedisBroker) -> bool:
    """Whether a client waits in BLPOP on the queue's wake-up list."""
    return any(c.get("cmd") == "blpop" for c in broker.client.client_list())


async def test_sends_push_a_bounded_expiring_token_list_and_delayed_sends_none(
    broker: RedisBroker,
) -> None:
    sender = ActorSender()
    target = actor(broker, "w")
    key = wake_key(broker.namespace, QUEUE)
    await sender.send(target, ("later",), 60_000)
    await sender.drain()
    assert not broker.client.exists(key)
    for n in range(MAX_TOKENS * 3):
        await sender.send(target, (str(n),), 0)
    await sender.drain()
    assert broker.client.llen(key) == MAX_TOKENS
    assert 0 < broker.client.pttl(key) <= TOKEN_TTL_MS
    assert broker.client.hlen(f"{broker.namespace}:{QUEUE}.msgs") == MAX_TOKENS * 3


async def test_an_idle_consumer_runs_a_sent_message_at_once(broker: RedisBroker) -> None:
    ran: list[str] = []
    async with waiting_consumer(broker, ran):
        sender, target = ActorSender(), actor(broker, "w")
        for text in ("one", "two"):
            await sender.send(target, (text,), 0)
            await sender.drain()
            await until(lambda text=text: text in ran, timeout=30)  # the poll is 60 s
            await until(lambda: blocked(broker), timeout=30)  # idle again, waiting
    assert ran == ["one", "two"]


async def test_a_released_delayed_message_wakes_the_consumer(broker: RedisBroker) -> None:
    ran: list[str] = []
    async with waiting_consumer(broker, ran):
        sender = ActorSender()
        await sender.send(actor(broker, "w"), ("delayed",), 300)
        await sender.drain()
        await until(lambda: ran == ["delayed"], timeout=30)


async def test_a_stop_does_not_wait_for_the_poll(broker: RedisBroker) -> None:
    ran: list[str] = []
    waiting = waiting_consumer(broker, ran)
    consumer = await waiting.__aenter__()  # blocked in BLPOP for up to a minute
    async with asyncio.timeout(30):
        await waiting.__aexit__(None, None, None)
    assert consumer.stopping.is_set()
    await until(lambda: not blocked(broker), timeout=30)  # its connection closed


async def test_a_consumer_without_wakeups_still_polls(broker: RedisBroker) -> None:
    """A message sent by a producer that pushes no token (Dramatiq's own) waits for the
    poll, then runs."""
    ran: list[str] = []
    async with waiting_consumer(broker, ran, poll_ms=200):
        actor(broker, "w").send("plain")
        await until(lambda: ran == ["plain"], timeout=30)
    assert not broker.client.exists(wake_key(broker.namespace, QUEUE))


async def test_a_waiter_on_an_unreachable_redis_sleeps_instead() -> None:
    waiter = Waiter(waiter_client({"host": "127.0.0.1", "port": 1}, 0.05), "ns", QUEUE)
    try:
        assert await waiter.wait(0.05) is False
    finally:
        await waiter.aclose()
