"""Flatness: does a fire cost the same in a session of 10 instances and one of 50,000?

Uses bench/engine.py's session (an ``andEvery`` task: each fire adds an instance) through the
engine directly (no HTTP), on its own redis-server. The big session is built with concurrent
fires (each one a script, atomic, so the order does not matter); then each round times fires
into the small session (rebuilt every 10 fires, so it holds 10 to 20) and the big one in turn,
one each, so both run under the same conditions; a round's figure is its median. The same two
sessions give the bytes per instance (MEMORY USAGE of the session's keys, big minus small, over
the instances in between), as bench/engine.py reports.
"""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid
from typing import Any

from redis.asyncio import Redis

from bench.engine import CONFIG
from bench.table import Row
from service.engine import Engine
from service.engine.keys import events_key, session_keys
from service.redis_server import RedisServer

KWARGS: dict[str, Any] = {"page": 3, "responses": {"q1": "yes", "q2": [1, 2, 3]}}
SMALL, BIG = "bench:flat:small", "bench:flat:big"


async def build(engine: Engine, uid: str, size: int) -> None:
    """A fresh session holding ``size`` instances of the andEvery task."""
    await engine.delete(uid)
    await engine.configure(uid, CONFIG)
    await engine.fire(uid, "applicant", {"id": 123})
    limit = asyncio.Semaphore(64)

    async def one() -> None:
        async with limit:
            await engine.fire(uid, "pageReceived", KWARGS)

    await asyncio.gather(*(one() for _ in range(size)))


async def timed(engine: Engine, uid: str, count: int) -> list[float]:
    latencies = []
    for _ in range(count):
        start = time.perf_counter()
        await engine.fire(uid, "pageReceived", KWARGS)
        latencies.append((time.perf_counter() - start) * 1000)
    return latencies


async def session_bytes(client: Redis, engine: Engine, uid: str) -> int:
    keys = [*session_keys(uid, engine.prefix), events_key(uid, engine.prefix)]
    return sum([int(await client.memory_usage(key, samples=0) or 0) for key in keys])


async def run(url: str, size: int, rounds: int, batch: int) -> tuple[list[Row], float]:
    client = Redis.from_url(url, decode_responses=True)
    engine = Engine(client, prefix=f"bench-{uuid.uuid4().hex[:8]}", finalize=True)
    await engine.load_scripts()
    await build(engine, SMALL, 10)
    await build(engine, BIG, size)
    per_instance = (await session_bytes(client, engine, BIG)
                    - await session_bytes(client, engine, SMALL)) / (size - 10)  # fmt: skip
    await timed(engine, SMALL, 50)  # warm-up
    small_runs, big_runs = [], []
    for _ in range(rounds):
        small: list[float] = []
        big: list[float] = []
        for n in range(batch):  # one fire each in turn: the same conditions for both
            if n % 10 == 0:
                await build(engine, SMALL, 10)
            small += await timed(engine, SMALL, 1)
            big += await timed(engine, BIG, 1)
        small_runs.append(statistics.median(small))
        big_runs.append(statistics.median(big))
    await engine.delete(SMALL)
    await engine.delete(BIG)
    await engine.aclose()
    row = Row(f"flatness: fire median at {size:,} / at 10 instances (engine)", "ms", big_runs,
              small_runs, "<= 1.2", lambda r: r <= 1.2)  # fmt: skip
    return [row], per_instance


def measure(size: int, rounds: int, batch: int) -> tuple[list[Row], float]:
    """Rows of the table, and bytes per (unstarted) instance with its kwargs."""
    with RedisServer() as redis:
        return asyncio.run(run(redis.url, size, rounds, batch))
