"""The threads ``def`` Python tasks run in, on the asyncio consumer.

A ``def`` task must leave the event loop. ``asyncio.to_thread`` hands it to the loop's
``ThreadPoolExecutor``: per call a ``concurrent.futures.Future`` (a ``Condition`` and its lock),
a work item, the executor's thread-count bookkeeping, and ``wrap_future`` chaining that future
to an asyncio one with a callback each way; py-spy of bench/pipeline.py's worker draining no-op
``def`` tasks put that hop at a tenth of the worker's CPU, more than the task. Here a call is
one queue put and, when it ends, one ``call_soon_threadsafe`` that settles the caller's future
on the loop.

What ``to_thread`` promises is kept: the function runs in a copy of the caller's context (log
context, trace), its exception (any ``BaseException``; ``StopIteration``, which an asyncio future
cannot carry, as a ``RuntimeError``) is raised to the caller, a caller cancelled while its call
waits in the queue cancels the call, and one cancelled while it runs stops waiting while the
thread finishes it (threads cannot be stopped from outside; a task's context turns
``cancelled``, python_tasks.py). At most ``size`` calls
run at once; the others wait in the queue in order. ``shutdown`` lets the calls queued or
running end, then the threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")
Job = tuple[asyncio.AbstractEventLoop, asyncio.Future[Any], contextvars.Context,
            Callable[..., Any], tuple[Any, ...]]  # fmt: skip


class TaskThreads:
    """``size`` threads started at the first call, fed from one queue."""

    def __init__(self, size: int, name: str = "triggers-def-task") -> None:
        self.size = size
        self.name = name
        self._jobs: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []

    async def run(self, function: Callable[..., T], *args: Any) -> T:
        """``function(*args)`` in one of the threads; its result or its exception."""
        if not self._threads:
            self._start()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._jobs.put((loop, future, contextvars.copy_context(), function, args))
        return await future

    def _start(self) -> None:
        for n in range(self.size):
            thread = threading.Thread(target=self._work, name=f"{self.name}_{n}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            _call(*job)
            job = None  # an idle thread holds no arguments or result

    def shutdown(self, timeout: float | None = None) -> None:
        """Let the queued and running calls end, then stop the threads (waiting up to
        ``timeout`` seconds for them)."""
        for _ in self._threads:
            self._jobs.put(None)
        for thread in self._threads:
            thread.join(timeout)
        self._threads = []


def _call(
    loop: asyncio.AbstractEventLoop, future: asyncio.Future[Any], context: contextvars.Context,
    function: Callable[..., Any], args: tuple[Any, ...],
) -> None:  # fmt: skip
    if future.cancelled():  # the caller stopped waiting before the call started: as with
        return  # to_thread, whose pending job is cancelled with it, it never runs
    try:
        result = context.run(function, *args)
    except StopIteration as error:  # an asyncio future refuses it: as in Python 3.12's asyncio
        wrapped = RuntimeError(f"{function!r} raised StopIteration")
        wrapped.__cause__ = error
        _settle_soon(loop, future, None, wrapped)
    except BaseException as error:  # as to_thread: the caller gets it, whatever it is
        _settle_soon(loop, future, None, error)
    else:
        _settle_soon(loop, future, result, None)


def _settle_soon(
    loop: asyncio.AbstractEventLoop, future: asyncio.Future[Any], result: Any,
    error: BaseException | None,
) -> None:  # fmt: skip
    with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nobody waits
        loop.call_soon_threadsafe(_settle, future, result, error)


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.cancelled():  # the caller stopped waiting (a lost lease, a stop)
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
