"""service/engine/batch.py: writes queued in one event-loop iteration go out in one call, later
ones in the next; a failed call is dropped (logged) without stopping the next; drain waits."""

from __future__ import annotations

import asyncio

import pytest

from service.engine.batch import Batcher


async def test_writes_of_one_iteration_go_in_one_call() -> None:
    calls: list[list[int]] = []

    async def send(items: list[int]) -> None:
        calls.append(items)
        await asyncio.sleep(0)

    batcher: Batcher[int] = Batcher(send, "test")
    for n in range(5):
        batcher.add(n)
    assert calls == []  # nothing is sent before the loop turns
    await batcher.drain()
    assert calls == [[0, 1, 2, 3, 4]]


async def test_writes_made_during_a_call_go_in_the_next() -> None:
    calls: list[list[int]] = []
    release = asyncio.Event()

    async def send(items: list[int]) -> None:
        calls.append(items)
        await release.wait()

    batcher: Batcher[int] = Batcher(send, "test", max_batch=2)
    batcher.add(1)
    await asyncio.sleep(0.01)  # the first call is in flight
    for n in (2, 3, 4):
        batcher.add(n)
    release.set()
    await batcher.drain()
    assert calls == [[1], [2, 3], [4]]  # at most max_batch per call


async def test_a_failed_call_is_logged_and_the_next_still_goes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sent: list[int] = []

    async def send(items: list[int]) -> None:
        if items == [1]:
            raise ConnectionError("down")
        sent.extend(items)

    batcher: Batcher[int] = Batcher(send, "test")
    batcher.add(1)
    await batcher.drain()
    batcher.add(2)
    await batcher.drain()
    assert sent == [2]
    assert "1 writes not sent" in caplog.text


async def test_put_waits_when_too_much_is_queued() -> None:
    release = asyncio.Event()
    sent: list[int] = []

    async def send(items: list[int]) -> None:
        await release.wait()
        sent.extend(items)

    batcher: Batcher[int] = Batcher(send, "test", max_queued=2)
    await batcher.put(0)
    await asyncio.sleep(0.01)  # 0 is in flight, the queue is empty
    await batcher.put(1)
    await batcher.put(2)
    third = asyncio.create_task(batcher.put(3))
    await asyncio.sleep(0.05)
    assert not third.done()  # two queued: the caller waits for the flush in flight
    release.set()
    await third
    await batcher.drain()
    assert sent == [0, 1, 2, 3]
