"""Sweeper benchmark: does one pass cost O(sessions due) rather than O(sessions pending)?

Builds a pending index of 100,000 sessions that need nothing for an hour (their scores are an
hour ahead, as after a retry with a one-hour cooldown; only the index entries are written, the
sweeper never reads those sessions) and times one sweep pass:

* with nothing due;
* with 1,000 real sessions due, each with a stranded outbox entry (committed, never handed
  over: an ``external`` task, so a re-send is an acknowledgement and no broker is involved);
* the same 1,000 due sessions with no other session pending (the cost that is O(due)).

Run: ``.venv/bin/python bench/sweeper.py`` (starts its own redis-server; ``TRIGGERS_REDIS_URL``
to use another). Options: ``--pending N``, ``--due N``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import tempfile
import time
import uuid
from contextlib import ExitStack
from pathlib import Path

from service.redis_server import RedisServer
from service.settings import Settings
from service.worker.runtime import WorkerRuntime
from service.worker.sweeper import Sweeper

CONFIG = {"tasks": {"t": {"after": ["go"], "run": "x", "using": "external"}}}


async def fill_index(runtime: WorkerRuntime, count: int) -> None:
    """``count`` index entries an hour ahead (sessions cooling down, never due in the bench)."""
    engine = runtime.engine
    later = int(time.time() * 1000) + 3600 * 1000
    for start in range(0, count, 10_000):
        entries = {f"idle:{n}": later for n in range(start, min(count, start + 10_000))}
        await engine.client.zadd(engine.pending_key, entries)


async def stranded_sessions(runtime: WorkerRuntime, count: int) -> None:
    """``count`` sessions whose fire committed an outbox entry nobody handed over, due now."""
    engine = runtime.engine
    limit = asyncio.Semaphore(32)

    async def one(n: int) -> None:
        async with limit:
            uid = f"due:{uuid.uuid4().hex[:8]}:{n}"
            await engine.configure(uid, CONFIG)
            await engine.fire(uid, "go")
            await engine.mark_pending(uid, 0)  # as if its grace period ran out long ago

    await asyncio.gather(*(one(n) for n in range(count)))


async def timed_pass(sweeper: Sweeper) -> tuple[float, int, int]:
    visited = sweeper.visited
    start = time.perf_counter()
    sent = await sweeper.pass_once()
    return (time.perf_counter() - start) * 1000, sweeper.visited - visited, sent


async def one_pass(url: str, idle: int, due: int) -> tuple[float, int, int]:
    """One timed pass over ``idle`` index entries not due and ``due`` stranded sessions, in a
    fresh key prefix: (ms, sessions visited, entries re-sent)."""
    with tempfile.TemporaryDirectory() as data:
        settings = Settings(
            redis_url=url, key_prefix=f"bench-{uuid.uuid4().hex[:8]}", data_dir=Path(data),
            sweep_interval=60, sweep_grace=0, manager="default",
        )  # fmt: skip
        runtime = WorkerRuntime(settings)
        # `external` entries model hand-overs that never happened: keep them in the outbox
        # (the dispatcher would have the scripts drop them at commit, see Engine.settle_at_commit)
        runtime.engine.settle_at_commit(())
        await runtime.engine.load_scripts()
        await fill_index(runtime, idle)
        await stranded_sessions(runtime, due)
        sweeper = Sweeper(runtime)
        result = await timed_pass(sweeper)
        await runtime.engine.client.delete(runtime.engine.pending_key)
        await runtime.aclose()
    return result


async def run(url: str, pending: int, due: int) -> None:
    rows = []
    for label, idle, with_due in (
        (f"{pending:,} pending, nothing due", pending, 0),
        (f"{pending:,} pending, {due:,} due", pending, due),
        (f"{due:,} pending, {due:,} due", 0, due),
    ):
        rows.append((label, *await one_pass(url, idle, with_due)))
    print(f"{'index':<34} {'pass ms':>9} {'visited':>8} {'re-sent':>8}")
    for label, ms, visited, sent in rows:
        print(f"{label:<34} {ms:>9.1f} {visited:>8} {sent:>8}")
    print(
        f"\nper due session: {rows[1][1] / max(1, rows[1][2]):.3f} ms with {pending:,} pending, "
        f"{rows[2][1] / max(1, rows[2][2]):.3f} ms alone"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pending", type=int, default=100_000, help="sessions not due")
    parser.add_argument("--due", type=int, default=1_000, help="sessions due")
    args = parser.parse_args()
    logging.disable(logging.WARNING)  # one warning per re-sent entry: not what is measured
    with ExitStack() as stack:
        url = os.environ.get("TRIGGERS_REDIS_URL")
        if not url:
            url = stack.enter_context(RedisServer()).url
        asyncio.run(run(url, args.pending, args.due))


if __name__ == "__main__":
    main()
