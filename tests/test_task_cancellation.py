"""A Python task's context after its run was cancelled (its lease lost): ``cancelled`` is
true and the calls that would change the session refuse, from a thread or the event loop."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from service.worker.python_tasks import TaskCancelled, TaskContext


async def test_a_cancelled_context_says_so_and_refuses_to_fire() -> None:
    fired: list[str] = []

    async def fire(trigger: str, kwargs: dict[str, Any] | None) -> None:
        fired.append(trigger)

    cancelled = threading.Event()
    context = TaskContext("s:1", "t#0", 1, {}, fire, asyncio.get_running_loop(),
                          cancelled=cancelled)  # fmt: skip
    await context.fire_async("before")
    assert await asyncio.to_thread(context.fire, "from-a-thread") is None
    assert not context.cancelled
    cancelled.set()
    assert context.cancelled
    with pytest.raises(TaskCancelled):
        await context.fire_async("after")
    with pytest.raises(TaskCancelled):
        await asyncio.to_thread(context.fire, "after-from-a-thread")
    assert fired == ["before", "from-a-thread"]
