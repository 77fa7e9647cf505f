"""Task slots: how many runs of one worker process claim and run their task at once.

The asyncio consumer (consumer.py) holds twice as many runs as it has threads: a run records
its outcome (complete and its cascade, one round trip to Redis) without a slot, so the next
run's claim and task take the slot meanwhile. A run waiting for a slot has claimed nothing yet;
once the worker is stopping it must not claim (its message goes back to the queue, as a message
fetched and not started does), or a graceful stop would start runs that the stop timeout then
cuts, and another worker would run those instances again while their threads go on.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class NotStarted(Exception):
    """The worker stopped while this run waited for a slot: nothing was claimed; the consumer
    puts the message back on its queue."""


class TaskSlots:
    """At most ``size`` holders at once; once ``close``d, a holder that gets its slot raises
    NotStarted instead of starting."""

    def __init__(self, size: int) -> None:
        self._free = asyncio.Semaphore(size)
        self.closed = False

    def close(self) -> None:
        """No more starts: runs waiting for a slot end with NotStarted when they get one."""
        self.closed = True

    @asynccontextmanager
    async def hold(self) -> AsyncIterator[None]:
        if self.closed:
            raise NotStarted("the worker is stopping")
        async with self._free:
            if self.closed:
                raise NotStarted("the worker is stopping")
            yield
