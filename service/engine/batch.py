"""Writes that a request need not wait for, sent as one pipeline per event-loop tick.

Some writes follow a committed change but add nothing to its answer: the post-mark of the
pending index (engine.py) and the Dramatiq message of a scheduled instance (worker/runners.py).
Both are backed by the change itself: the pre-mark sent before the script bounds when the
sweeper visits the session, and the outbox entry written by the script is re-sent by the
sweeper if its message never arrives. Awaiting them cost each request a second round trip.

A ``Batcher`` collects such writes and sends what was collected by the end of the current
event-loop iteration in one call of ``send`` (one pipeline); while that call is in flight new
writes gather for the next one, so under load one round trip carries many requests' writes.
Bounds: at most ``max_batch`` items per call, and a caller adding past ``max_queued`` waits for
the flush in flight (back-pressure instead of unbounded memory). A failed call is logged and
dropped: what it carried is recovered as said above. ``drain`` waits for everything added so far
(shutdown, and reads that must see the writes of this process).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


class Batcher(Generic[T]):
    def __init__(
        self,
        send: Callable[[list[T]], Awaitable[None]],
        what: str,
        *,
        max_batch: int = 500,
        max_queued: int = 10_000,
    ) -> None:
        self._send = send
        self._what = what
        self._max_batch = max_batch
        self._max_queued = max_queued
        self._items: list[T] = []
        self._task: asyncio.Task[None] | None = None

    def add(self, item: T) -> None:
        """Queue ``item`` for the next flush (started on the next loop iteration)."""
        self._items.append(item)
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done() or self._task.get_loop() is not loop:
            self._task = loop.create_task(self._flush())

    async def put(self, item: T) -> None:
        """``add``, first waiting for the flush in flight when too much is queued."""
        while len(self._items) >= self._max_queued and self._flushing_here():
            assert self._task is not None
            await asyncio.shield(self._task)
        self.add(item)

    async def drain(self) -> None:
        """Wait until everything added so far has been sent (or failed). A flush of another
        event loop (one that has ended) is not waited for: its writes are recovered as above."""
        while self._flushing_here():
            assert self._task is not None
            await asyncio.shield(self._task)

    def _flushing_here(self) -> bool:
        task = self._task
        return (
            task is not None and not task.done() and task.get_loop() is asyncio.get_running_loop()
        )

    async def _flush(self) -> None:
        while self._items:
            batch = self._items[: self._max_batch]
            del self._items[: self._max_batch]
            try:
                await self._send(batch)
            except Exception as error:  # recovered by the pre-mark / the sweeper (see above)
                log.warning("%s: %d writes not sent (%s: %s); the sweeper recovers them",
                            self._what, len(batch), type(error).__name__, error)  # fmt: skip
