"""The ``dramatiq`` runner (the default ``using``): sends instances to the run_instance actor.

On a Redis broker the message is enqueued from the event loop, without a thread, and without
the request waiting for it: ``send`` builds the Dramatiq message exactly as
``RedisBroker.enqueue`` does and queues it; the messages queued during one event-loop iteration
go out as one pipeline of the broker's own ``dispatch.lua`` enqueue commands, on an asyncio
Redis client (service/engine/batch.py). A fire's answer then costs one round trip (its script);
under load one pipeline carries the messages of many requests. A message lost with a failed
pipeline or a dying process was committed to the session's outbox by the change that scheduled
it: the sweeper re-sends it after the grace period (dispatch.py), so nothing is lost; claim
makes duplicates harmless. Sending through the synchronous broker from a thread cost the API
half its fire throughput (bench/api.py). Other brokers (RabbitMQ) are sent to from a thread.

The same round trip as the change's script is not possible: the message names the instance,
which only the script knows, and the broker's Redis need not be the engine's (cluster + broker
Redis deployments), nor its keys in the session's slot.

Dramatiq internals relied on (checked against the installed version by
tests/test_dramatiq_internals.py): ``RedisBroker.scripts["dispatch"]`` (a redis-py Script of
``dispatch.lua``) called with KEYS ``[broker.namespace]`` and ARGV ``["enqueue", now_ms,
queue, broker.broker_id, broker.heartbeat_timeout, broker.dead_message_ttl, do_maintenance,
broker._max_unpack_size(), redis_message_id, encoded message]`` (``RedisBroker._dispatch``);
message options ``redis_message_id`` (the id of the message in Redis, unique per enqueue) and,
for a delay, ``eta`` (ms) with the queue name ``dq_name(queue)``; the broker's
``emit_before``/``emit_after("enqueue", message, delay)`` middleware hooks (skipped when no
middleware overrides ``Middleware``'s no-op hook). The message is built in one step with the
fields ``actor.message_with_options`` gives it and the options its copies add, in their
order, and encoded by orjson when the global encoder is Dramatiq's ``JSONEncoder`` (the same
JSON value as ``Message.encode``): message construction, copies, hooks and the json module
were most of an enqueue's CPU time in the API process (bench/fire_wrk.py).

The actor module sets up the broker when imported, so it is imported on first use.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import threading
import time
import uuid
import weakref
from typing import Any, ClassVar, NamedTuple

import orjson
from dramatiq.broker import Broker
from dramatiq.brokers.redis import RedisBroker
from dramatiq.common import dq_name
from dramatiq.encoder import JSONEncoder
from dramatiq.message import Message, get_encoder
from dramatiq.middleware import Middleware
from redis.asyncio import Redis
from redis.exceptions import NoScriptError

from service import tracing
from service.engine.batch import Batcher
from service.engine.connection import (
    HealingConnectionPool,
    HiredisPackingConnection,
    no_retry,
    pooled_exchange,
)
from service.settings import Settings
from service.worker.wakeup import wake_commands

log = logging.getLogger(__name__)


class Enqueue(NamedTuple):
    """One message for the broker's enqueue command, and what its hooks need."""

    broker: RedisBroker
    message: Message[Any]
    delay: int | None

    @property
    def args(self) -> list[Any]:
        """ARGV of dispatch.lua's "enqueue" command (as RedisBroker._dispatch passes it)."""
        broker, message = self.broker, self.message
        return [
            "enqueue", int(time.time() * 1000), message.queue_name, broker.broker_id,
            broker.heartbeat_timeout, broker.dead_message_ttl, 0,
            broker._max_unpack_size(),  # type: ignore[no-untyped-call]
            message.options["redis_message_id"], encode(message),
        ]  # fmt: skip


def encode(message: Message[Any]) -> bytes:
    """``message.encode()``; with Dramatiq's default encoder (JSON), by orjson: the same JSON
    value (json.loads reads both alike), several times faster than the json module. A message
    orjson cannot encode (a value only the json module takes) is encoded by the encoder."""
    if type(get_encoder()) is JSONEncoder:
        try:
            return orjson.dumps(message.asdict())
        except TypeError:
            pass
    return message.encode()


def hooked(broker: Broker, signal: str) -> bool:
    """Whether any middleware of ``broker`` has its own ``before_``/``after_`` ``signal`` hook:
    when none has, emitting it calls only Middleware's no-ops and is skipped."""
    base = getattr(Middleware, signal)
    return any(getattr(type(m), signal) is not base for m in broker.middleware)


class ActorSender:
    """Sends messages to an actor: batched from the event loop on a Redis broker, else from a
    thread (awaited)."""

    _live: ClassVar[weakref.WeakSet[ActorSender]] = weakref.WeakSet()
    _live_lock: ClassVar[threading.Lock] = threading.Lock()  # senders of several loops' threads

    def __init__(self) -> None:
        self._client: Redis | None = None
        self._batch: Batcher[Enqueue] = Batcher(self._enqueue_batch, "dramatiq enqueue")
        with ActorSender._live_lock:
            ActorSender._live.add(self)

    def _client_for(self, broker: RedisBroker) -> Redis:
        """The asyncio client on the broker's Redis, made on first use. Nothing is awaited
        here, so concurrent first sends all see the one client, ready to use."""
        if self._client is None:
            self._client = broker_client(broker)
        return self._client

    async def send(
        self, actor: Any, args: tuple[Any, ...], delay_ms: int, message_id: str | None = None
    ) -> None:
        """Queue the message (Redis broker: sent with the next batch; see the module doc).
        ``message_id``: the Redis broker's message id (``instance_message_id``; None: a random
        one, as Dramatiq makes). Other brokers ignore it."""
        broker = actor.broker
        if not isinstance(broker, RedisBroker):
            await asyncio.to_thread(actor.send_with_options, args=args, delay=delay_ms or None,
                                    **tracing.message_options())  # fmt: skip
            return
        # the message RedisBroker.enqueue would send for actor.send_with_options, built in one
        # step (Dramatiq builds it, then copies it for the id, then for the delay)
        now = int(time.time() * 1000)
        options = tracing.message_options()
        options["redis_message_id"] = message_id or self.redis_message_id()
        queue = actor.queue_name
        delay = delay_ms or None
        if delay is not None:
            queue = dq_name(queue)
            options["eta"] = now + delay
        message: Message[Any] = Message(
            queue_name=queue, actor_name=actor.actor_name, args=args, kwargs={},
            options=options, message_timestamp=now,
        )  # fmt: skip
        if hooked(broker, "before_enqueue"):
            broker.emit_before("enqueue", message, delay)
        await self._batch.put(Enqueue(broker, message, delay))

    @staticmethod
    def redis_message_id() -> str:
        """A message's id in the broker's Redis (option ``redis_message_id``) when the caller
        names none: the one place it is chosen. Unique per enqueue, as RedisBroker.enqueue
        makes it."""
        return str(uuid.uuid4())

    async def aclose(self) -> None:
        """Send what is queued, then close the broker connections this sender opened."""
        await self.drain()
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()

    async def drain(self) -> None:
        """Wait until every queued message has been sent (or its batch failed)."""
        await self._batch.drain()

    @classmethod
    async def drain_all(cls) -> None:
        """``drain`` every sender of this process (before its event loop's pools close)."""
        with cls._live_lock:
            senders = list(cls._live)
        for sender in senders:  # a sender of another loop's thread is left to that loop
            await sender.drain()

    async def _enqueue_batch(self, items: list[Enqueue]) -> None:
        """One pipeline of the broker's own enqueue command (dispatch.lua), then the after
        hooks of the messages it took.

        The script's SHA1 is known without asking Redis (redis-py computes it), so there is no
        load step to race: a Redis that does not know the script yet answers NOSCRIPT, and the
        script is loaded then (by each concurrent sender that saw NOSCRIPT; loading is
        idempotent) and those commands repeated.
        """
        brokers = {id(item.broker): item.broker for item in items}
        for broker in brokers.values():  # one in practice: the process's broker
            await self._enqueue_on(broker, [i for i in items if i.broker is broker])

    async def _enqueue_on(self, broker: RedisBroker, items: list[Enqueue]) -> None:
        script: Any = broker.scripts["dispatch"]
        client = self._client_for(broker)
        results = await self._pipeline(client, script.sha, broker.namespace, items)
        missing = [n for n, result in enumerate(results) if isinstance(result, NoScriptError)]
        if missing:
            await client.script_load(script.script)
            again = [items[n] for n in missing]
            for n, result in zip(missing, await self._pipeline(
                client, script.sha, broker.namespace, again
            ), strict=True):  # fmt: skip
                results[n] = result
        after = hooked(broker, "after_enqueue")
        for item, result in zip(items, results, strict=True):
            if isinstance(result, Exception):
                log.warning("dramatiq enqueue of %s failed (%s); the sweeper re-sends it",
                            item.message.message_id, result)  # fmt: skip
            elif after:
                broker.emit_after("enqueue", item.message, item.delay)

    @staticmethod
    async def _pipeline(client: Redis, sha: str, namespace: str, items: list[Enqueue]) -> list[Any]:
        """The enqueue commands in one round trip (connection.exchange: written at once,
        replies read within one socket timeout; an error reply in its command's place), then
        the wake-ups of idle asyncio consumers of the queues they fill (wakeup.py; their
        replies are not the items' and are dropped: a lost wake-up costs one poll)."""
        commands: list[tuple[Any, ...]] = [
            ("EVALSHA", sha, 1, namespace, *item.args) for item in items
        ]
        ready = [item.message.queue_name for item in items if item.delay is None]
        commands += wake_commands(namespace, ready)
        return (await pooled_exchange(client, commands))[: len(items)]


class DramatiqRunner:
    """Sends the instance to the run_instance actor, delayed until it is due."""

    key = "dramatiq"
    acknowledges = False  # the claim drops the outbox entry; until then the sweeper watches

    def __init__(self) -> None:
        self.sender = ActorSender()

    async def dispatch(self, uid: str, name: str, delay_ms: int, scheduled_ms: int) -> None:
        """``scheduled_ms`` 0 (a lease's re-send: the instance is still running): a fresh id,
        apart from the message the lease's dead worker still holds."""
        from service.worker.actors import run_instance

        message_id = instance_message_id(uid, name, scheduled_ms) if scheduled_ms else None
        await self.sender.send(run_instance, (uid, name), delay_ms, message_id)


def instance_message_id(uid: str, name: str, scheduled_ms: int) -> str:
    """The Redis broker's message id of the run_instance message of one dispatch of an
    instance: derived from the session, the instance and when it became scheduled, so the
    sweeper can ask the broker whether that message is still queued (service/worker/sweeper.py,
    ``QueuedMessages``) before re-sending it under the same id. The time keeps a later dispatch
    of the same instance (a retry with no cooldown, sent while the worker running it has not
    acknowledged its message yet) apart: Dramatiq's ack deletes the message data under the
    acked id, which would otherwise be the new message's."""
    digest = hashlib.sha256(f"{uid}\x00{name}\x00{scheduled_ms}".encode()).hexdigest()[:32]
    return f"trg-{digest}"


def broker_client(broker: RedisBroker) -> Redis:
    """An asyncio client on the Redis broker's server (its connection options, our bounded
    pool): for sending messages and for asking the broker what it still holds."""
    return Redis(connection_pool=broker_pool(broker_options(broker)))


def broker_options(broker: RedisBroker) -> dict[str, Any]:
    """The connection options of the Redis broker's client (server, credentials, timeouts)."""
    options = broker.client.connection_pool.connection_kwargs
    return {key: value for key, value in options.items() if key in _REDIS_OPTIONS}


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
