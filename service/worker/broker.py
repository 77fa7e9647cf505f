"""The Dramatiq broker: Redis by default (the state Redis unless TRIGGERS_BROKER_URL says
otherwise), RabbitMQ for ``amqp://`` URLs. Async actors need the AsyncIO middleware."""

from __future__ import annotations

import dramatiq
from dramatiq.broker import Broker
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
        from dramatiq.brokers.redis import RedisBroker

        broker = RedisBroker(  # type: ignore[no-untyped-call]
            url=url, namespace=f"{settings.key_prefix}-dramatiq"
        )
    broker.add_middleware(AsyncIO())
    dramatiq.set_broker(broker)
    return broker
