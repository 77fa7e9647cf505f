"""Sweep pass rows: bench/sweeper.py's passes in alternating rounds on one redis-server.

Per round: a pass over 100,000 pending sessions with nothing due, one with ``due`` stranded
sessions among them, and one with the same ``due`` sessions alone (the O(due) reference).
"""

from __future__ import annotations

import asyncio
import logging

from bench.sweeper import one_pass
from bench.table import Row
from service.redis_server import RedisServer


async def run(url: str, pending: int, due: int, rounds: int) -> list[Row]:
    idle_ms, mixed_ms, alone_ms = [], [], []
    wrong = 0
    for _ in range(rounds):
        idle_ms.append((await one_pass(url, pending, 0))[0])
        ms, _, sent = await one_pass(url, pending, due)
        mixed_ms.append(ms)
        wrong += sent != due
        ms, _, sent = await one_pass(url, 0, due)
        alone_ms.append(ms)
        wrong += sent != due
    flag = f" ({wrong} passes re-sent != {due}!)" if wrong else ""
    return [
        Row(f"sweep pass, {pending:,} pending, none due (info)", "ms", idle_ms),
        Row(f"sweep pass, {pending:,} pending + {due:,} due / {due:,} due alone (info){flag}",
            "ms", mixed_ms, alone_ms),
    ]  # fmt: skip


def measure(pending: int, due: int, rounds: int) -> list[Row]:
    logging.disable(logging.WARNING)  # one warning per re-sent entry: not what is measured
    try:
        with RedisServer() as redis:
            return asyncio.run(run(redis.url, pending, due, rounds))
    finally:
        logging.disable(logging.NOTSET)
