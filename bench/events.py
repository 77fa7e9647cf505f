"""Event log and session index: what they add to a fire.

Fires into one session (a task that absorbs every fire, as bench/engine.py does) with the event
log on (TRIGGERS_EVENT_LOG_MAX=1000) and off (0), and prints the median and p99 fire latency of
each and the Redis commands per fire (INFO commandstats: RPUSH inside the script, ZADD for the
session index and the pending mark in the same pipeline).

Run: ``.venv/bin/python bench/events.py`` (starts its own redis-server; ``TRIGGERS_REDIS_URL``
to use another). Options: ``--samples N`` fires timed per mode.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
import uuid
from contextlib import ExitStack

from redis.asyncio import Redis

from service.engine import Engine
from service.redis_server import RedisServer

CONFIG = {"tasks": {"t_page": {"after": ["go"], "andEvery": "page", "run": "P"}}}


async def counts(client: Redis) -> dict[str, int]:
    stats = await client.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(value["calls"]) for name, value in stats.items()}


async def measure(url: str, cap: int, samples: int) -> tuple[float, float, dict[str, float]]:
    client = Redis.from_url(url, decode_responses=True)
    engine = Engine(client, prefix=f"bench-{uuid.uuid4().hex[:6]}", event_log_cap=cap)
    await engine.load_scripts()
    uid = "bench:events"
    await engine.configure(uid, CONFIG)
    await engine.fire(uid, "go")
    for _ in range(200):  # warm up (and fill the log past its cap)
        await engine.fire(uid, "page")
    before = await counts(client)
    latencies = []
    for _ in range(samples):
        started = time.perf_counter()
        await engine.fire(uid, "page")
        latencies.append((time.perf_counter() - started) * 1000)
    after = await counts(client)
    per_fire: dict[str, float] = {
        name: (after[name] - before.get(name, 0)) / samples
        for name in ("rpush", "ltrim", "zadd", "hset", "evalsha")
        if name in after
    }
    await engine.aclose()
    latencies.sort()
    return statistics.median(latencies), latencies[int(len(latencies) * 0.99) - 1], per_fire


async def run(url: str, samples: int) -> None:
    for label, cap in (("event log off", 0), ("event log on ", 1000)):
        median, p99, per_fire = await measure(url, cap, samples)
        commands = ", ".join(f"{name} {count:.2f}" for name, count in per_fire.items())
        print(f"{label}: fire median {median:.3f} ms, p99 {p99:.3f} ms; per fire: {commands}")
    print("(zadd per fire: the pending mark and the session index, both in the fire's pipeline;")
    print(" hset includes the writes inside the script)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--samples", type=int, default=3000)
    args = parser.parse_args()
    with ExitStack() as stack:
        url = os.environ.get("TRIGGERS_REDIS_URL") or stack.enter_context(RedisServer()).url
        asyncio.run(run(url, args.samples))


if __name__ == "__main__":
    main()
