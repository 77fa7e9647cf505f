"""Engine benchmark: does the cost of a fire grow with the session?

Fires an ``andEvery`` trigger into one session until it holds 10, 1,000 and 10,000 instances,
and at each size measures the latency of fires (each fire adds one instance), the Redis commands
each fire costs (round trips the fire waits for, counted at the connection: writes made by the
fire's own task, not by batches sent in the background; and commands run inside the script,
from INFO commandstats) and the bytes Redis holds per instance (MEMORY USAGE of the session's keys).

Goal (issue "Engine"): the median fire at 10,000 instances within 1.2x of the median at 10, and
one round trip per fire. Run: ``.venv/bin/python bench/engine.py`` (starts its own redis-server;
``TRIGGERS_REDIS_URL`` to use another). Options: ``--samples N`` fires timed per size.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
import uuid
from collections.abc import Sequence
from contextlib import ExitStack
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection

from service.engine import Engine
from service.engine import connection as connection_module
from service.engine.keys import session_keys
from service.engine.scripts import RedisClient
from service.redis_server import RedisServer

SIZES = (10, 1_000, 10_000)
UID = "bench:engine"
CONFIG = {
    "tasks": {
        "t_page": {"after": ["applicant"], "andEvery": "pageReceived", "run": "P"},
        "t_other": {"after": ["withdrawn"], "run": "P"},
    }
}


class AwaitedWrites:
    """Counts the writes to Redis made by one task (the bench's): the round trips a fire waits
    for, whether redis-py's own (``send_packed_command``) or the engine's one-write exchanges
    (``connection.exchange``, which writes to the socket itself). Background flushes
    (post-marks, service/engine/batch.py) run in their own tasks."""

    def __init__(self) -> None:
        self.count = 0
        self.task: asyncio.Task[object] | None = None
        original = AbstractConnection.send_packed_command
        original_exchange = connection_module.exchange
        counter = self

        def mine() -> bool:
            return counter.task is not None and asyncio.current_task() is counter.task

        async def counted(self: AbstractConnection, *args: object, **kwargs: object) -> None:
            counter.count += mine()
            await original(self, *args, **kwargs)  # type: ignore[arg-type]

        async def counted_exchange(
            connection: AbstractConnection, commands: Sequence[tuple[Any, ...]]
        ) -> list[Any]:
            counter.count += mine()
            return await original_exchange(connection, commands)

        AbstractConnection.send_packed_command = counted  # type: ignore[method-assign]
        connection_module.exchange = counted_exchange  # pooled_exchange looks it up per call


WRITES = AwaitedWrites()


async def command_counts(client: RedisClient) -> dict[str, int]:
    stats = await client.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(value["calls"]) for name, value in stats.items()}


def delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {
        k: after.get(k, 0) - before.get(k, 0) for k in after if after.get(k, 0) != before.get(k, 0)
    }


async def session_bytes(client: Redis, engine: Engine) -> int:
    total = 0
    for key in session_keys(UID, engine.prefix):
        total += int(await client.memory_usage(key, samples=0) or 0)
    return total


async def rebuild(engine: Engine, size: int, kwargs: dict[str, object]) -> None:
    """A fresh session holding exactly ``size`` instances of the andEvery task."""
    await engine.delete(UID)
    await engine.configure(UID, CONFIG)
    await engine.fire(UID, "applicant", {"id": 123})
    for _ in range(size):
        await engine.fire(UID, "pageReceived", kwargs)


async def timed_fires(
    engine: Engine, size: int, samples: int, kwargs: dict[str, object]
) -> tuple[list[float], dict[str, int]]:
    """Latencies of ``samples`` fires made while the session holds size .. size * 1.05 instances
    (every fire adds one, so the session is rebuilt whenever it has grown by 5%), and the Redis
    commands those fires ran."""
    allowed_growth = max(1, size // 20)
    latencies: list[float] = []
    used: dict[str, int] = {}
    while len(latencies) < samples:
        await rebuild(engine, size, kwargs)
        before = await command_counts(engine.client)
        for _ in range(min(allowed_growth, samples - len(latencies))):
            start = time.perf_counter()
            WRITES.task = asyncio.current_task()
            await engine.fire(UID, "pageReceived", kwargs)
            WRITES.task = None
            latencies.append((time.perf_counter() - start) * 1000)
        for name, calls in delta(before, await command_counts(engine.client)).items():
            used[name] = used.get(name, 0) + calls
    return latencies, used


async def run(url: str, samples: int) -> None:
    client = Redis.from_url(url, decode_responses=True)
    engine = Engine(client, prefix=f"bench-{uuid.uuid4().hex[:8]}", finalize=True)
    await engine.load_scripts()
    await engine.configure(UID, CONFIG)
    await engine.fire(UID, "applicant", {"id": 123})
    kwargs: dict[str, object] = {"page": 3, "responses": {"q1": "yes", "q2": [1, 2, 3]}}
    await timed_fires(engine, 10, 200, kwargs)  # warm-up, not reported
    rows = []
    breakdowns: dict[int, dict[str, float]] = {}
    bytes_at: dict[int, int] = {}
    for size in SIZES:
        await rebuild(engine, size, kwargs)
        bytes_at[size] = await session_bytes(client, engine)
        WRITES.count = 0
        latencies, used = await timed_fires(engine, size, samples, kwargs)
        used.pop("info", None)
        round_trips = WRITES.count / samples
        inner = sum(used.values()) / samples
        rows.append((size, statistics.median(latencies), _p99(latencies), round_trips, inner))
        breakdowns[size] = {name: calls / samples for name, calls in sorted(used.items())}
    per_instance = (bytes_at[SIZES[-1]] - bytes_at[SIZES[0]]) / (SIZES[-1] - SIZES[0])
    print(
        f"{'instances':>10} {'median ms':>10} {'p99 ms':>8} "
        f"{'round trips':>12} {'cmds in Redis':>15}"
    )
    for size, median, p99, trips, inner in rows:
        print(f"{size:>10} {median:>10.3f} {p99:>8.3f} {trips:>12.2f} {inner:>15.1f}")
    for size, per_fire in breakdowns.items():
        listed = ", ".join(f"{name} {calls:.2f}" for name, calls in per_fire.items())
        print(f"commands per fire at {size:,}: {listed}")
    ratio = rows[-1][1] / rows[0][1]
    print(f"\nbytes per instance (MEMORY USAGE, 10 -> 10,000): {per_instance:.0f}")
    print(f"median fire at {SIZES[-1]:,} / median at {SIZES[0]}: {ratio:.2f}x (goal <= 1.20x)")
    print(f"round trips per fire: {rows[-1][3]:.2f} (goal 1)")
    await engine.delete(UID)
    await engine.aclose()


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--samples", type=int, default=500, help="fires timed per size")
    args = parser.parse_args()
    with ExitStack() as stack:
        url = os.environ.get("TRIGGERS_REDIS_URL")
        if not url:
            url = stack.enter_context(RedisServer()).url
        asyncio.run(run(url, args.samples))


if __name__ == "__main__":
    main()
