"""Many processes firing into one session at once: every fire applied once, no gap, no duplicate.

Eight (or more) OS processes, each with its own connection pool and event loop, wait on a
barrier and then fire an ``andEvery`` trigger into the same session as fast as they can. The
atomic fire script must give instance numbers 0..N-1 exactly, each holding the kwargs of exactly
one fire. Runs against the standalone server and the three-master cluster.
"""

from __future__ import annotations

import asyncio
import multiprocessing
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from service.engine import Engine
from tests.conftest import unique_prefix

PROCESSES = 8
FIRES_PER_PROCESS = 60
UID = "applicant:concurrent"


def _fire_many(url: str, cluster: bool, prefix: str, worker: int, barrier: Any) -> None:
    """Runs in a child process: wait for everyone, then fire FIRES_PER_PROCESS pages."""

    async def run() -> None:
        engine = Engine.from_url(url, cluster=cluster, prefix=prefix)
        await engine.load_scripts()
        barrier.wait()
        for i in range(FIRES_PER_PROCESS):
            await engine.fire(UID, "pageReceived", {"worker": worker, "i": i})
        await engine.aclose()

    asyncio.run(run())


async def _concurrent_fires(engine: Engine, url: str, cluster: bool) -> None:
    await engine.configure(
        UID,
        {
            "tasks": {
                "t_page": {"after": [], "andEvery": "pageReceived", "run": "N"},
                "t_once": {"after": ["pageReceived"], "run": "N"},
            }
        },
    )
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(PROCESSES)
    processes = [
        context.Process(target=_fire_many, args=(url, cluster, engine.prefix, worker, barrier))
        for worker in range(PROCESSES)
    ]
    for process in processes:
        process.start()
    for process in processes:
        await asyncio.to_thread(process.join, 120)
        assert process.exitcode == 0

    total = PROCESSES * FIRES_PER_PROCESS
    snapshot = await engine.snapshot(UID)
    pages = [i for i in snapshot.instances.values() if i.task == "t_page"]
    assert sorted(i.number for i in pages) == list(range(total))
    seen = [(i.kwargs["pageReceived"]["worker"], i.kwargs["pageReceived"]["i"]) for i in pages]
    assert sorted(seen) == [(w, i) for w in range(PROCESSES) for i in range(FIRES_PER_PROCESS)]
    assert all(i.status == "scheduled" for i in pages)
    # The one-shot task got exactly one instance from all those fires (D5a).
    assert [i.name for i in snapshot.instances.values() if i.task == "t_once"] == ["t_once#0"]
    assert snapshot.version == total + 1  # one configure + one change per fire


async def test_eight_processes_fire_into_one_session(redis_url: str) -> None:
    engine = Engine(Redis.from_url(redis_url, decode_responses=True), prefix=unique_prefix())
    await engine.load_scripts()
    await engine.delete(UID)
    try:
        await _concurrent_fires(engine, redis_url, cluster=False)
    finally:
        await engine.delete(UID)
        await engine.aclose()


@pytest.mark.timeout(300)
async def test_eight_processes_fire_into_one_session_on_cluster(redis_cluster: Any) -> None:
    client = RedisCluster.from_url(redis_cluster.url, decode_responses=True)
    engine = Engine(client, prefix=unique_prefix())
    await engine.load_scripts()
    await engine.delete(UID)
    try:
        await _concurrent_fires(engine, redis_cluster.url, cluster=True)
    finally:
        await engine.delete(UID)
        await engine.aclose()
