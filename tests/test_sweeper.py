"""The sweeper: one leader at a time, and what a pass re-sends (tests/test_sweeper_scale.py:
the pending index at scale)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from service.settings import Settings
from service.worker.runtime import WorkerRuntime
from service.worker.sweeper import Sweeper
from tests.conftest import unique_prefix


@pytest.fixture
async def runtimes(redis_url: str, tmp_path: object) -> AsyncIterator[list[WorkerRuntime]]:
    settings = Settings(redis_url=redis_url, key_prefix=unique_prefix(), sweep_interval=0.2,
                        sweep_grace=0, data_dir=str(tmp_path), manager="default")  # fmt: skip
    made = [WorkerRuntime(settings), WorkerRuntime(settings)]
    yield made
    for runtime in made:
        await runtime.aclose()


async def test_at_most_one_sweeper_leads(runtimes: list[WorkerRuntime]) -> None:
    first, second = (Sweeper(runtime) for runtime in runtimes)
    assert await first.lead() is True
    assert await second.lead() is False
    assert await first.lead() is True  # renewed, still the leader
    await asyncio.sleep(0.7)  # the lock (3 intervals) runs out without renewal
    assert await second.lead() is True
    assert await first.lead() is False


async def test_a_pass_re_sends_stranded_entries_and_prunes_empty_sessions(
    runtimes: list[WorkerRuntime],
) -> None:
    runtime = runtimes[0]
    engine = runtime.engine
    engine.settle_at_commit(())  # external entries wait in the outbox, as for any runner
    await engine.configure("s:1", {"tasks": {"t": {"after": ["go"], "run": "x",
                                                   "using": "external"}}})  # fmt: skip
    await engine.fire("s:1", "go")  # committed, never handed over (as if the caller died)
    await engine.fire("s:2", "nothing")  # marked pending, but nothing to send
    assert {uid for uid, _ in await engine.pending_sessions()} == {"s:1", "s:2"}
    sweeper = Sweeper(runtime)
    assert await sweeper.pass_once() == 1  # t#0 handed to its runner (external: acknowledged)
    assert await sweeper.pass_once() == 0
    now = int(time.time() * 1000)
    assert await engine.due_sessions(now, 10) == []  # nothing due: a pass reads nothing
    assert dict(await engine.pending_sessions())["s:2"] >= now + 30_000  # scheduled nothing
    await asyncio.sleep(sweeper.settle_ms / 1000 + 0.1)  # the changes have surely landed
    assert await sweeper.pass_once() == 0
    assert {uid for uid, _ in await engine.pending_sessions()} == {"s:2"}  # s:1 left
    assert (await engine.instance("s:1", "t#0")).status == "scheduled"
