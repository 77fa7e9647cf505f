"""The threads of ``def`` Python tasks (service/worker/task_threads.py) keep what
``asyncio.to_thread`` promised: the result or the exception, the caller's context, at most
``size`` calls at once, a cancelled caller that stops waiting while the call ends, and a
shutdown that lets queued calls end."""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time

import pytest

from service.worker.task_threads import TaskThreads

tag: contextvars.ContextVar[str] = contextvars.ContextVar("tag", default="none")


async def test_a_call_returns_its_result_or_raises_its_exception_off_the_loop() -> None:
    threads = TaskThreads(2)
    loop_thread = threading.get_ident()
    try:
        total, ran_in = await threads.run(lambda a, b: (a + b, threading.get_ident()), 2, 3)
        assert total == 5 and ran_in != loop_thread

        def fails() -> None:
            raise KeyError("missing")

        with pytest.raises(KeyError, match="missing"):
            await threads.run(fails)

        def exits() -> None:
            raise SystemExit(3)  # any BaseException reaches the caller, as with to_thread

        with pytest.raises(SystemExit):
            await threads.run(exits)

        def stops() -> None:
            next(iter(()))  # StopIteration, which an asyncio future cannot carry

        with pytest.raises(RuntimeError, match="StopIteration"):
            await asyncio.wait_for(threads.run(stops), 10)
        assert await threads.run(lambda: "still serving") == "still serving"
    finally:
        threads.shutdown(10)


async def test_a_call_runs_in_a_copy_of_the_callers_context() -> None:
    threads = TaskThreads(1)

    def read_and_change() -> str:
        seen = tag.get()
        tag.set("changed in the thread")
        return seen

    try:
        tag.set("the caller's")
        assert await threads.run(read_and_change) == "the caller's"
        assert tag.get() == "the caller's"  # a copy: the thread's change stays there
    finally:
        threads.shutdown(10)


async def test_at_most_size_calls_run_at_once_and_the_others_wait_in_order() -> None:
    threads = TaskThreads(2)
    running, most, order = 0, 0, []
    lock = threading.Lock()

    def work(n: int) -> int:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
            order.append(n)
        time.sleep(0.05)
        with lock:
            running -= 1
        return n

    try:
        assert await asyncio.gather(*(threads.run(work, n) for n in range(8))) == list(range(8))
        assert most == 2 and sorted(order) == list(range(8))
    finally:
        threads.shutdown(10)


async def test_a_cancelled_caller_stops_waiting_and_the_call_still_ends() -> None:
    threads = TaskThreads(1)
    release, ended = threading.Event(), threading.Event()

    def blocked() -> str:
        release.wait(10)
        ended.set()
        return "late"

    try:
        waiting = asyncio.create_task(threads.run(blocked))
        await asyncio.sleep(0.1)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        release.set()
        assert await threads.run(lambda: "next") == "next"  # the late result went nowhere
        assert ended.is_set()
    finally:
        threads.shutdown(10)


async def test_a_call_whose_caller_was_cancelled_while_it_waited_never_runs() -> None:
    threads = TaskThreads(1)
    release = threading.Event()
    ran: list[str] = []
    try:
        busy = asyncio.create_task(threads.run(release.wait, 10))
        queued = asyncio.create_task(threads.run(ran.append, "queued"))
        await asyncio.sleep(0.1)  # both jobs in the queue, the first one running
        queued.cancel()
        with pytest.raises(asyncio.CancelledError):
            await queued
        release.set()
        assert await busy is True
        assert await threads.run(ran.append, "later") is None
        assert ran == ["later"]  # the cancelled one was skipped, not run late
    finally:
        threads.shutdown(10)


def test_shutdown_lets_queued_calls_end_and_stops_the_threads() -> None:
    threads = TaskThreads(2, name="shutdown-test")
    done: list[int] = []

    async def queue_some() -> list[asyncio.Future[None]]:
        loop = asyncio.get_running_loop()
        return [loop.create_task(threads.run(lambda n=n: done.append(n))) for n in range(6)]

    async def main() -> None:
        calls = await queue_some()
        await asyncio.sleep(0)  # each call queued its job
        threads.shutdown(10)
        await asyncio.gather(*calls)

    asyncio.run(main())
    assert sorted(done) == list(range(6))
    assert not [t for t in threading.enumerate() if t.name.startswith("shutdown-test")]
