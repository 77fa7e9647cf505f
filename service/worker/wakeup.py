"""Wake-ups: an idle asyncio worker starts a run as soon as our producers queue a message,
instead of at its next poll.

A Redis queue is polled: an idle consumer (Dramatiq's or ours) fetches every
``TRIGGERS_WORKER_POLL_MS`` (20 ms), so a message sent to an idle worker waited half a poll on
average and a whole one at worst, and every hop of a cascade paid it again (bench/e2e.py:
fire -> HTTP task p50 9-12 ms, most of it that wait). Here our producers (the API's and the
workers' ``ActorSender``, and the asyncio consumer moving due delayed messages to the queue)
push a token on a short list beside the queue, in the same round trip as the enqueue; an idle
asyncio consumer waits for a token with ``BLPOP`` (timeout: the poll) instead of sleeping, and
fetches at once when one arrives.

Nothing depends on a wake-up: a consumer still fetches at least once per poll (which also
keeps its broker heartbeat fresh), so messages sent without one (a Dramatiq producer, a lost
token) run as before, and Dramatiq's own worker ignores the list. Each token wakes one waiting
consumer; with several messages a batch pushes as many tokens (at most ``MAX_TOKENS``). The
list holds at most ``MAX_TOKENS`` (a token nobody waited for only makes one later fetch early)
and expires ``TOKEN_TTL_MS`` after the latest push, so a queue without asyncio consumers keeps
no growing key. The key, ``<namespace>:__wake__.<queue>``, sits beside Dramatiq's own
``__acks__``/``__heartbeats__`` keys; the broker's maintenance never touches it.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Iterable
from typing import Any

from redis.asyncio import Redis

from service.worker.backoff import one_line

log = logging.getLogger(__name__)

MAX_TOKENS = 64
"""Tokens the list keeps: more than the consumers that could be waiting on one queue."""
TOKEN_TTL_MS = 60_000
"""The list expires this long after its latest push."""


def wake_key(namespace: str, queue: str) -> str:
    """The wake-up list of ``queue`` (a canonical queue, never a delay queue)."""
    return f"{namespace}:__wake__.{queue}"


def wake_commands(namespace: str, queues: Iterable[str]) -> list[tuple[Any, ...]]:
    """The commands that wake idle consumers for messages just enqueued on ``queues`` (one
    name per message; canonical queues only): a token per message, per queue (sent after the
    enqueues, in their round trip)."""
    commands: list[tuple[Any, ...]] = []
    for queue, messages in Counter(queues).items():
        key = wake_key(namespace, queue)
        commands += [
            ("LPUSH", key, *("1",) * min(messages, MAX_TOKENS)),
            ("LTRIM", key, 0, MAX_TOKENS - 1),
            ("PEXPIRE", key, TOKEN_TTL_MS),
        ]
    return commands


class Waiter:
    """Waits for a wake-up of one queue on a connection of its own (BLPOP blocks it)."""

    def __init__(self, client: Redis, namespace: str, queue: str) -> None:
        self.client = client
        self.key = wake_key(namespace, queue)

    async def wait(self, seconds: float) -> bool:
        """Until a token arrives (True) or ``seconds`` pass (False). A failure (Redis away)
        is a plain wait: the caller's fetch reports it."""
        try:
            return await self.client.blpop([self.key], timeout=max(seconds, 0.001)) is not None
        except asyncio.CancelledError:
            raise
        except Exception as error:
            log.debug("waiting for a wake-up failed (%s); sleeping the poll", one_line(error))
            await asyncio.sleep(seconds)
            return False

    async def aclose(self) -> None:
        await self.client.aclose()


def waiter_client(broker_options: dict[str, Any], poll_seconds: float) -> Redis:
    """A client with one connection of its own for BLPOP: its socket timeout outlasts the
    longest wait, which a shared pool's connection must not be held for."""
    options = dict(broker_options)
    options["socket_timeout"] = poll_seconds + 10
    return Redis(max_connections=1, **options)
