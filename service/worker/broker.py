"""The Dramatiq broker: Redis by default (the state Redis unless TRIGGERS_BROKER_URL says
otherwise), RabbitMQ for ``amqp://`` URLs. Async actors need the AsyncIO middleware."""

from __future__ import annotations

from typing import Any

import dramatiq
from dramatiq.broker import Broker, Consumer
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware.asyncio import AsyncIO

from service.settings import Settings

QUEUE = "triggers"


class TopologyError(RuntimeError):
    """Settings that cannot work together; the message says which and how to fix it."""


def check_topology(settings: Settings) -> None:
    """State on a Redis Cluster needs a broker of its own.

    Dramatiq's Redis broker keeps each queue in several keys without a common hash tag and
    moves messages between them in Lua, which a cluster refuses (``MovedError``): fires were
    answered ``scheduled`` and nothing ever ran. Refusing to start says so at once.
    """
    if settings.redis_cluster and settings.broker_url in (None, "", settings.redis_url):
        raise TopologyError(
            "TRIGGERS_REDIS_CLUSTER=true needs TRIGGERS_BROKER_URL set to a separate broker "
            "(amqp://... for RabbitMQ or redis://... for a standalone Redis): Dramatiq's Redis "
            "broker does not work on a Redis Cluster, so no task would ever run"
        )


def broker_url(settings: Settings) -> str:
    url = settings.broker_url or settings.redis_url
    if not url:
        raise RuntimeError("TRIGGERS_BROKER_URL or TRIGGERS_REDIS_URL must be set for workers")
    return url


_configured: Broker | None = None


def ensure_broker(settings: Settings) -> Broker:
    """This process's broker: the one already configured (by the app, from its own settings),
    or one built now from ``settings``. Actors bind to it when their module is imported."""
    global _configured
    if _configured is None:
        _configured = build_broker(settings)
    return _configured


def build_broker(settings: Settings) -> Broker:
    check_topology(settings)
    url = broker_url(settings)
    broker: Broker
    if url.startswith("amqp"):
        from dramatiq.brokers.rabbitmq import RabbitmqBroker  # needs the pika package

        # Publisher confirms: without them a publish RabbitMQ never stored (it stopped or
        # restarted meanwhile) looks sent; with them enqueue returns once the broker has the
        # message, or fails and Dramatiq retries it (and re-declares a missing queue).
        broker = RabbitmqBroker(url=url, confirm_delivery=True)
    else:
        broker = FetchInBatchesBroker(url=url, namespace=f"{settings.key_prefix}-dramatiq")
    broker.add_middleware(AsyncIO())
    dramatiq.set_broker(broker)
    return broker


FETCH_SHARE = 4
"""A consumer fetches once at least 1/FETCH_SHARE of its prefetch window is free."""


class FetchInBatchesBroker(RedisBroker):
    """Dramatiq's Redis broker, its consumers fetching a few messages at a time.

    A Redis consumer keeps up to ``prefetch`` messages (twice the worker threads) and, each
    time it finds its cache empty, fetches as many as the window has room for: under a backlog
    that is one slot, freed by the latest ack, so every task cost a fetch of its own (one
    EVALSHA of the broker's dispatch.lua, with its maintenance; 1.2-1.5 fetches per task in
    bench/pipeline.py, where a bare actor, acked faster than its consumer wakes, paid 0.1).
    Here a fetch for fewer than a quarter of the window answers "nothing" without asking
    Redis: the consumer then sleeps its short idle backoff (5 ms and up, at most the poll) while
    the window fills up, and fetches a batch. The threads keep three quarters of the window
    (one and a half messages each) meanwhile, so they do not run dry; a window of one or two
    messages (one thread) fetches every free slot as before.

    Dramatiq internals relied on (tests/test_dramatiq_internals.py): ``_RedisConsumer`` fetches
    through ``broker.do_fetch(queue_name, room)`` (``RedisBroker.__getattr__`` makes the
    ``do_*`` commands; a method of that name takes precedence) and treats an empty answer as a
    miss; ``consume(queue_name, prefetch, timeout)`` makes each queue's consumer.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[no-untyped-call]
        self._least: dict[str, int] = {}

    def consume(self, queue_name: str, prefetch: int = 1, timeout: int = 5000) -> Consumer:
        self._least[queue_name] = max(1, prefetch // FETCH_SHARE)
        return super().consume(queue_name, prefetch, timeout)

    def do_fetch(self, queue_name: str, room: int) -> list[bytes]:
        if room < self._least.get(queue_name, 1):
            return []
        return list(self._dispatch("fetch")(queue_name, room))  # type: ignore[no-untyped-call]
