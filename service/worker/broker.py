"""The Dramatiq broker: Redis by default (the state Redis unless TRIGGERS_BROKER_URL says
otherwise), RabbitMQ for ``amqp://`` URLs. Async actors need the AsyncIO middleware."""

from __future__ import annotations

import dramatiq
from dramatiq.broker import Broker
from dramatiq.middleware.asyncio import AsyncIO

from service.settings import Settings

QUEUE = "triggers"


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
    url = broker_url(settings)
    broker: Broker
    if url.startswith("amqp"):
        from dramatiq.brokers.rabbitmq import RabbitmqBroker  # needs the pika package

        broker = RabbitmqBroker(url=url)
    else:
        from dramatiq.brokers.redis import RedisBroker

        broker = RedisBroker(  # type: ignore[no-untyped-call]
            url=url, namespace=f"{settings.key_prefix}-dramatiq"
        )
    broker.add_middleware(AsyncIO())
    dramatiq.set_broker(broker)
    return broker
