"""The worker's scripts, coalesced: the script calls of one event-loop iteration share one
round trip.

A worker process runs its actors on one event loop (Dramatiq's AsyncIO middleware): under a
backlog its eight threads' claims and completes arrive together, and the sweeper's loop visits
sixteen sessions at once. Each call used to take a pooled connection, write its pipeline (the
pre-mark, the session index touch, the EVALSHA) and wait for its replies on its own; the
calls made during one loop iteration now go out as one write on one connection, their
replies read back in order (connection.exchange, as ``ScriptRunner._send`` does, for many
callers). The pool's checkout, the write and read system calls, and Redis's own per-read work
are paid once per iteration instead of once per call (bench/pipeline.py).

Nothing about a call's atomicity changes: each script is still one EVALSHA, its pre-mark and
touch precede it on the same connection, and calls only share a connection, never a
transaction. What is shared is the fate of the exchange: a connection error fails every call
in it, each with its outcome unknown, as a lone call's would be (never re-sent; the sweeper
repairs what was committed). Error replies belong to the call whose command drew them
(NOSCRIPT makes ``ScriptRunner.run`` load the script and repeat that call only). A caller
that is cancelled while its batch is in flight gets no answer, and its commands may have run,
as before; the batch itself is never cut, so the connection stays in step for the others.
"""

from __future__ import annotations

import asyncio
from typing import Any

from redis.asyncio import Redis

from service.engine.connection import pooled_exchange
from service.engine.scripts import (
    IndexTouch,
    Mark,
    Script,
    ScriptRunner,
    raise_first_error,
    script_commands,
)

MAX_BATCH = 256
"""Most calls in one exchange (a longer iteration's calls go in several)."""

Commands = list[tuple[Any, ...]]


class CoalescingScriptRunner(ScriptRunner):
    """A ScriptRunner whose script calls made during one event-loop iteration go to Redis as
    one write on one pooled connection (standalone Redis; a cluster client calls as before)."""

    def __init__(self, client: Redis) -> None:
        super().__init__(client)
        self._waiting: list[tuple[Commands, asyncio.Future[list[Any]]]] = []
        self._next_flush: asyncio.Task[None] | None = None  # made, not started yet
        self._in_flight: set[asyncio.Task[None]] = set()

    async def _call(
        self,
        script: Script,
        keys: list[str],
        args: list[str | int | float],
        mark: Mark | None,
        touch: IndexTouch | None,
    ) -> Any:
        if not isinstance(self.client, Redis):
            return await super()._call(script, keys, args, mark, touch)
        replies = await self._queue(script_commands(script, keys, args, mark, touch))
        return raise_first_error(replies)[-1]

    def _queue(self, commands: Commands) -> asyncio.Future[list[Any]]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[Any]] = loop.create_future()
        self._waiting.append((commands, future))
        if self._next_flush is None:  # its first step comes after the callbacks of this
            task = loop.create_task(self._flush())  # iteration: the calls they make join
            self._next_flush = task
            self._in_flight.add(task)  # held until done: a pending task may not be collected
            task.add_done_callback(self._flushed)
        return future

    def _flushed(self, task: asyncio.Task[None]) -> None:
        """A flush ended; one cancelled before its first step (the loop closing) never took
        its calls: they are cancelled too, and the next call makes a new flush."""
        self._in_flight.discard(task)
        if self._next_flush is task:
            self._next_flush = None
            waiting, self._waiting = self._waiting, []
            for _, future in waiting:
                future.cancel()

    async def _flush(self) -> None:
        """The calls queued since this task was made, in exchanges of at most MAX_BATCH.
        (A task made at the first call, not a callback that makes one: the write goes out one
        loop iteration sooner, two per claim-run-complete.)"""
        self._next_flush = None
        waiting, self._waiting = self._waiting, []
        batches = [waiting[at : at + MAX_BATCH] for at in range(0, len(waiting), MAX_BATCH)]
        if len(batches) == 1:
            await self._exchange(batches[0])
            return
        await asyncio.gather(*(self._exchange(batch) for batch in batches))

    async def _exchange(self, batch: list[tuple[Commands, asyncio.Future[list[Any]]]]) -> None:
        """One write of every command of ``batch``, every reply read back (error replies kept
        in place, see ``ScriptRunner._send``); each caller gets its own replies."""
        batch = [(commands, future) for commands, future in batch if not future.done()]
        if not batch:
            return
        commands = [command for group, _ in batch for command in group]
        client: Any = self.client
        try:
            replies = await pooled_exchange(client, commands)
        except BaseException as error:  # none sent, or cut: each call fails as a lone one would
            _fail(batch, error)
            raise_if_fatal(error)
            return
        at = 0
        for group, future in batch:
            if not future.done():
                future.set_result(replies[at : at + len(group)])
            at += len(group)


def _fail(batch: list[tuple[Commands, asyncio.Future[list[Any]]]], error: BaseException) -> None:
    for _, future in batch:
        if future.done():
            continue
        if isinstance(error, asyncio.CancelledError):  # the loop is closing: so are the callers
            future.cancel()
        else:
            future.set_exception(error)


def raise_if_fatal(error: BaseException) -> None:
    """Let a cancellation or an exit through once the callers know."""
    if not isinstance(error, Exception):
        raise error
