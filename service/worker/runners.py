"""The ``dramatiq`` runner (the default ``using``): sends instances to the run_instance actor.

On a Redis broker the message is enqueued from the event loop, without a thread: the runner
builds the Dramatiq message exactly as ``RedisBroker.enqueue`` does (a Redis message id, the
delay queue and ``eta`` for a delay, the broker's enqueue middleware hooks) and runs the
broker's own ``dispatch.lua`` enqueue command through an asyncio Redis client. Sending through
the synchronous broker from a thread cost the API half its fire throughput (bench/api.py).
Other brokers (RabbitMQ) are sent to from a thread.

The actor module sets up the broker when imported, so it is imported on first use.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from typing import Any

from dramatiq.brokers.redis import RedisBroker
from dramatiq.common import dq_name
from redis.asyncio import Redis
from redis.exceptions import NoScriptError

from service import tracing
from service.engine.connection import HealingConnectionPool, HiredisPackingConnection, no_retry
from service.settings import Settings


class ActorSender:
    """Sends messages to an actor: from the event loop on a Redis broker, else from a thread."""

    def __init__(self) -> None:
        self._client: Redis | None = None

    def _client_for(self, broker: RedisBroker) -> Redis:
        """The asyncio client on the broker's Redis, made on first use. Nothing is awaited
        here, so concurrent first sends all see the one client, ready to use."""
        if self._client is None:
            options = broker.client.connection_pool.connection_kwargs
            pool = broker_pool(
                {key: value for key, value in options.items() if key in _REDIS_OPTIONS}
            )
            self._client = Redis(connection_pool=pool)
        return self._client

    async def send(
        self, actor: Any, args: tuple[Any, ...], delay_ms: int, message_id: str | None = None
    ) -> None:
        """``message_id``: the Redis broker's message id (``instance_message_id``; None: a
        random one, as Dramatiq makes). Other brokers ignore it."""
        broker = actor.broker
        if not isinstance(broker, RedisBroker):
            await asyncio.to_thread(actor.send_with_options, args=args, delay=delay_ms or None,
                                    **tracing.message_options())  # fmt: skip
            return
        message = actor.message_with_options(args=args, **tracing.message_options())
        message = message.copy(options={"redis_message_id": message_id or str(uuid.uuid4())})
        queue = message.queue_name
        delay = delay_ms or None
        if delay is not None:
            queue = dq_name(queue)
            message = message.copy(
                queue_name=queue, options={"eta": int(time.time() * 1000) + delay}
            )
        broker.emit_before("enqueue", message, delay)
        await self._enqueue(broker, queue, message.options["redis_message_id"], message.encode())
        broker.emit_after("enqueue", message, delay)

    async def _enqueue(self, broker: RedisBroker, queue: str, message_id: str, data: bytes) -> None:
        """The broker's own enqueue command (dispatch.lua), with the arguments it passes.

        The script's SHA1 is known without asking Redis (redis-py computes it), so there is no
        load step to race: a Redis that does not know the script yet answers NOSCRIPT, and the
        script is loaded then (by each concurrent sender that saw NOSCRIPT; loading is
        idempotent) and the call repeated.
        """
        script: Any = broker.scripts["dispatch"]
        client = self._client_for(broker)
        args = [
            "enqueue", int(time.time() * 1000), queue, broker.broker_id,
            broker.heartbeat_timeout, broker.dead_message_ttl, 0,
            broker._max_unpack_size(),  # type: ignore[no-untyped-call]
            message_id, data,
        ]  # fmt: skip
        try:
            await client.evalsha(script.sha, 1, broker.namespace, *args)
        except NoScriptError:
            await client.script_load(script.script)
            await client.evalsha(script.sha, 1, broker.namespace, *args)


class DramatiqRunner:
    """Sends the instance to the run_instance actor, delayed until it is due."""

    key = "dramatiq"
    acknowledges = False  # the claim drops the outbox entry; until then the sweeper watches

    def __init__(self) -> None:
        self.sender = ActorSender()

    async def dispatch(self, uid: str, name: str, delay_ms: int) -> None:
        from service.worker.actors import run_instance

        await self.sender.send(run_instance, (uid, name), delay_ms, instance_message_id(uid, name))


def instance_message_id(uid: str, name: str) -> str:
    """The Redis broker's message id of every run_instance message of an instance: derived
    from the session and the instance, so the sweeper can ask the broker whether a message for
    it is still queued (service/worker/sweeper.py, ``QueuedMessages``) before re-sending one.
    Any such message does the same (the actor claims whatever the instance's state is then)."""
    digest = hashlib.sha256(f"{uid}\x00{name}".encode()).hexdigest()[:32]
    return f"trg-{digest}"


def broker_pool(options: dict[str, Any]) -> HealingConnectionPool:
    """Connections to the broker Redis, bounded and waiting like the engine's: past 100
    concurrent enqueues redis-py's pool raised "Too many connections" (245 of a burst of
    1,000 hand-overs failed, their instances waiting for the sweeper's grace)."""
    settings = Settings()
    return HealingConnectionPool(
        connection_class=HiredisPackingConnection, retry=no_retry(),
        max_connections=settings.redis_max_connections, timeout=settings.redis_pool_timeout,
        **options,
    )  # fmt: skip


_REDIS_OPTIONS = {"host", "port", "db", "username", "password", "socket_timeout",
                  "socket_connect_timeout"}  # fmt: skip
