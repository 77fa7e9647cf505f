"""Dramatiq's Redis queue protocol, spoken from an asyncio event loop.

The asyncio consumer (service/worker/consumer.py) takes messages off the queues a Dramatiq
``RedisBroker`` keeps, and gives them back, with the broker's own ``dispatch.lua``: the same
script, the same commands, the same arguments ``RedisBroker._dispatch`` passes. A Dramatiq
worker and ours are therefore interchangeable on one queue, producers are unchanged, and the
broker's dead-worker recovery still covers our messages: every command refreshes this
process's heartbeat in ``<ns>:__heartbeats__`` (under ``broker.broker_id``), a fetched
message's id sits in ``<ns>:__acks__.<broker_id>.<queue>`` until its ack, and any process's
commands run the maintenance (with the broker's chance) that puts a dead worker's unacked
messages back on their queue.

Dramatiq internals relied on (checked against the installed Dramatiq by
tests/test_consumer.py):

* ``RedisBroker.scripts["dispatch"]`` is the redis-py Script of ``dispatch.lua``, called with
  KEYS ``[broker.namespace]`` and ARGV ``[command, now_ms, queue_name, broker.broker_id,
  broker.heartbeat_timeout, broker.dead_message_ttl, broker._should_do_maintenance(command),
  broker._max_unpack_size(), *args]`` (``RedisBroker._dispatch``);
* the commands: ``fetch <n>`` (pops up to n ids off ``<ns>:<queue>``, adds them to this
  worker's ack set, answers their data from ``<ns>:<queue>.msgs``, a nil for an id without
  data), ``ack <id>`` (drops the id from the ack set and its data), ``nack <id>`` (moves the
  data to the dead-letter queue ``<ns>:<queue>.XQ``), ``requeue <id>...`` (puts fetched ids
  back on their queue), ``enqueue <id> <data>``;
* this worker's ack set of a queue is ``<ns>:__acks__.<broker_id>.<queue>`` (read after a
  fetch whose answer was lost, to put back what it took);
* a message is ``Message.decode(data)`` (the JSON encoder's value, ``args`` a tuple, as
  ``decode`` here builds it) / ``Message.encode()`` (runners.encode) and is known
  in Redis by its option ``redis_message_id``; a delayed message sits in ``<queue>.DQ``
  (``dq_name``) with the option ``eta`` (ms since the epoch), and is moved to the canonical
  queue (``q_name``) once due, under a new id and without ``eta``, then acked on the delay
  queue (``ConsumerThread.handle_delayed_messages``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import orjson
from dramatiq.brokers.redis import RedisBroker
from dramatiq.common import q_name
from dramatiq.encoder import JSONEncoder
from dramatiq.errors import DecodeError
from dramatiq.message import Message, get_encoder
from redis.asyncio import Redis
from redis.exceptions import NoScriptError

from service.engine.connection import pooled_exchange
from service.engine.scripts import raise_first_error
from service.worker.runners import ActorSender, encode
from service.worker.wakeup import wake_commands

log = logging.getLogger(__name__)


def decode(data: bytes) -> Message[Any]:
    """``Message.decode(data)``; with Dramatiq's default encoder (JSON), by orjson (several
    times faster than the json module, the same value; anything orjson refuses goes to
    ``Message.decode``, which decodes it or raises its ``DecodeError``)."""
    if type(get_encoder()) is JSONEncoder:
        try:
            fields = orjson.loads(data)
            fields["args"] = tuple(fields["args"])
            return Message(**fields)
        except Exception:  # Message.decode says what is wrong with it
            pass
    return Message.decode(data)


class BrokerQueues:
    """Commands of ``dispatch.lua`` on one broker, each batch in one round trip."""

    def __init__(self, broker: RedisBroker, client: Redis) -> None:
        self.broker = broker
        self.client = client
        self.script: Any = broker.scripts["dispatch"]
        self.unpack: int = broker._max_unpack_size()  # type: ignore[no-untyped-call]

    def command(self, command: str, queue: str, *args: Any) -> tuple[Any, ...]:
        """One EVALSHA of dispatch.lua, with the arguments RedisBroker._dispatch gives it."""
        broker = self.broker
        maintenance = broker._should_do_maintenance(command)
        return (
            "EVALSHA", self.script.sha, 1, broker.namespace, command, int(time.time() * 1000),
            queue, broker.broker_id, broker.heartbeat_timeout, broker.dead_message_ttl,
            maintenance, self.unpack, *args,
        )  # fmt: skip

    async def send(self, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
        """The commands in one round trip; a Redis that does not know the script yet
        (NOSCRIPT) gets it loaded and those commands again. The first error reply is raised
        (after every command ran: a batch of acks is not cut short by one)."""
        if not commands:
            return []
        replies = await pooled_exchange(self.client, commands)
        missing = [n for n, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
        if missing:
            await self.client.script_load(self.script.script)
            again = await pooled_exchange(self.client, [commands[n] for n in missing])
            for n, reply in zip(missing, again, strict=True):
                replies[n] = reply
        return raise_first_error(replies)

    async def fetch(self, queue: str, room: int) -> list[Message[Any]]:
        """Up to ``room`` messages off ``queue`` (0: only a heartbeat), now this worker's
        until acked or requeued. An id whose data is gone (acked meanwhile by a worker
        maintenance thought dead) answers nil and is skipped, as Dramatiq does."""
        (found,) = await self.send([self.command("fetch", queue, min(room, self.unpack))])
        messages = []
        for data in found:
            if data is None:
                continue
            try:
                messages.append(decode(data))
            except DecodeError as error:  # the others still run; this one stays fetched
                log.error("an undecodable message on %s was skipped: %s", queue, error)
        return messages

    async def fetched(self, queue: str) -> set[str]:
        """The ids of the messages this worker fetched from ``queue`` and has not acked,
        nacked or requeued (its ack set)."""
        key = f"{self.broker.namespace}:__acks__.{self.broker.broker_id}.{queue}"
        (members,) = await self.send([("SMEMBERS", key)])
        return {m.decode() if isinstance(m, bytes) else str(m) for m in members}

    async def settle(
        self, acks: Sequence[tuple[str, str]], nacks: Sequence[tuple[str, str]]
    ) -> None:
        """Acks and nacks (queue, message id) in one round trip."""
        commands = [self.command("ack", queue, mid) for queue, mid in acks]
        commands += [self.command("nack", queue, mid) for queue, mid in nacks]
        await self.send(commands)

    async def requeue(self, queue: str, message_ids: Sequence[str]) -> None:
        """Fetched but unrun messages back on ``queue`` (for another worker, or this one
        again)."""
        for start in range(0, len(message_ids), self.unpack):
            chunk = message_ids[start : start + self.unpack]
            await self.send([self.command("requeue", queue, *chunk)])

    async def release_due(self, queue: str, messages: Sequence[Message[Any]]) -> None:
        """Delayed messages whose eta passed: each enqueued on its canonical queue under a new
        id, without ``eta``, then acked on the delay queue ``queue``, and idle consumers woken;
        all in one round trip, enqueues first (a cut between the two leaves a duplicate, which
        the claim refuses, never a loss)."""
        commands = []
        for message in messages:
            options = {k: v for k, v in message.options.items() if k != "eta"}
            options["redis_message_id"] = ActorSender.redis_message_id()
            due = message.copy(queue_name=q_name(message.queue_name), options=options)
            due.options.pop("eta", None)  # copy merges options: drop the old eta for good
            commands.append(self.command("enqueue", due.queue_name,
                                         due.options["redis_message_id"], encode(due)))  # fmt: skip
        commands += [self.command("ack", queue, m.options["redis_message_id"]) for m in messages]
        # idle consumers run them now (wakeup.py)
        commands += wake_commands(self.broker.namespace, [q_name(m.queue_name) for m in messages])
        await self.send(commands)
