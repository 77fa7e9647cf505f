"""Task path benchmark: the scripts one task costs, and Redis time by script (issue 11 item 3).

Runs the path of a no-op Python task as the service does it, in this process against its own
redis-server: fire (and its hand-over: the Dramatiq enqueue), claim, the task's context,
complete (and its hand-over: webhook events, if any). One session per task, configured
beforehand, so every task also finalizes its session (the ``sessionFinalized`` event, which
nobody subscribes to here). Redis time comes from SLOWLOG with ``slowlog-log-slower-than 0``
(every command, with its duration in µs as Redis measured it), grouped by script (EVALSHA by
SHA1) or command. No Dramatiq worker runs: the enqueued messages stay queued. The sweeper is
not part of this path (bench/sweeper.py).

Also: how many queued messages a sweeper pass sends again under a backlog; the per-call cost
of the Lua library's preamble (a trivial script with the whole
library, with the parts it uses, and alone) and the cost of a task's logger after many
distinct instance names (10,000 by default: before the fix, the set-up alone grew
quadratically).

Run: ``.venv/bin/python bench/task_path.py [--tasks N]``. To compare with another checkout,
run the same file with ``PYTHONPATH=<checkout>`` (its ``service`` package is then used).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import statistics
import time
from collections import defaultdict
from typing import Any

from redis.asyncio import Redis

from service.redis_server import RedisServer


async def slowlog(client: Redis) -> list[tuple[str, int]]:
    """(command line, µs) of every command since the last reset."""
    entries = await client.slowlog_get(1_000_000)
    return [(_text(entry["command"]), int(entry["duration"])) for entry in entries]


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def label(command: str, names: dict[str, str]) -> str:
    parts = command.split()
    if parts[0].upper() == "EVALSHA":
        return names.get(parts[1], "dramatiq enqueue" if "enqueue" in parts else parts[1][:8])
    return parts[0].upper()


async def task_path(url: str, tasks: int) -> None:
    os.environ["TRIGGERS_REDIS_URL"] = url
    from service.engine.scripts import load_sources
    from service.settings import Settings
    from service.worker.dispatch import Dispatcher, load_runners
    from service.worker.python_tasks import TaskContext
    from service.worker.runtime import WorkerRuntime

    runtime = WorkerRuntime(Settings(redis_url=url, key_prefix="bench"))
    engine = runtime.engine
    dispatcher = Dispatcher(engine, load_runners(), runtime.settings)
    names = {script.sha: name for name, script in load_sources().items()}
    config = {"tasks": {"t": {"after": ["go"], "run": "noop"}}}
    uids = [f"task-path:{i}" for i in range(tasks + 20)]
    for uid in uids:
        await engine.configure(uid, config)
    admin = Redis.from_url(url)
    await admin.config_set("slowlog-max-len", 1_000_000)
    loop = asyncio.get_running_loop()

    async def one(uid: str) -> None:
        outcome = await engine.fire(uid, "go", {"n": 1})
        await dispatcher.dispatch(uid, outcome)
        claim = await engine.claim(uid, "t#0")
        assert claim.state == "claimed" and claim.token, claim

        def fire(trigger: str, kwargs: dict[str, Any] | None, uid: str = uid) -> Any:
            return runtime.fire(uid, trigger, kwargs)

        context = TaskContext(uid, "t#0", 1, claim.kwargs or {}, fire, loop)
        context.close()
        outcome = await engine.complete(uid, "t#0", claim.token, {}, log_level=context.log_level)
        await dispatcher.dispatch(uid, outcome)

    for uid in uids[:20]:  # warm-up: scripts loaded, connections made
        await one(uid)
    await admin.config_set("slowlog-log-slower-than", 0)
    await admin.slowlog_reset()
    started = time.perf_counter()
    for uid in uids[20:]:
        await one(uid)
    elapsed = time.perf_counter() - started
    await admin.config_set("slowlog-log-slower-than", 10_000)
    calls: dict[str, list[int]] = defaultdict(list)
    for command, micros in await slowlog(admin):  # commands inside scripts are logged too
        if command.upper().startswith("EVALSHA"):
            calls[label(command, names)].append(micros)
    print(f"{'script':<20} {'per task':>9} {'µs median':>10} {'µs per task':>12}")
    for name, values in sorted(calls.items(), key=lambda item: -sum(item[1])):
        print(f"{name:<20} {len(values) / tasks:>9.2f} {statistics.median(values):>10.1f} "
              f"{sum(values) / tasks:>12.1f}")  # fmt: skip
    ours = {k: v for k, v in calls.items() if k != "dramatiq enqueue"}
    enqueues = len(calls.get("dramatiq enqueue", [])) / tasks
    print(f"\nengine scripts per task: {sum(map(len, ours.values())) / tasks:.2f} "
          f"(+ {enqueues:.2f} Dramatiq enqueue); their Redis µs per task: "
          f"{sum(map(sum, ours.values())) / tasks:.1f}")  # fmt: skip
    print(f"client wall time per task: {elapsed / tasks * 1e6:.0f} µs (one at a time)")
    await admin.aclose()
    await runtime.aclose()


async def preamble(url: str, calls: int) -> None:
    """Server µs of a trivial script: alone, with the parts of the library it uses, with all."""
    from importlib import resources

    library = resources.files("service.engine").joinpath("lua/includes/lib.lua").read_text()
    body = "return NOW"
    variants = {
        "bare (no library)": "local NOW = 0\n" + body,
        "whole library": f"{library}\n{body}",
    }
    try:
        from service.engine.scripts import LuaLibrary

        variants["parts it uses"] = f"{LuaLibrary(library).needed_by(body)}\n{body}"
    except ImportError:  # a checkout without the split
        pass
    client = Redis.from_url(url)
    keys = [f"{{bench}}:{i}" for i in range(14)]
    args: list[str | int] = [0, "0", "", 0, 1000, "*", ""]
    print(f"\n{'trivial script':<20} {'µs median':>10}")
    for name, source in variants.items():
        sha = hashlib.sha1(source.encode()).hexdigest()
        await client.script_load(source)
        for _ in range(200):
            await client.evalsha(sha, len(keys), *keys, *args)
        await client.config_set("slowlog-log-slower-than", 0)
        await client.slowlog_reset()
        for _ in range(calls):
            await client.evalsha(sha, len(keys), *keys, *args)
        await client.config_set("slowlog-log-slower-than", 10_000)
        micros = [m for c, m in await slowlog(client) if c.upper().startswith("EVALSHA")]
        print(f"{name:<20} {statistics.median(micros):>10.1f}")
    await client.aclose()


async def backlog(url: str, sessions: int) -> None:
    """A backlog: ``sessions`` instances sent to Dramatiq, no worker taking them, every entry
    overdue (grace 0): how many messages one sweeper pass sends again."""
    os.environ["TRIGGERS_REDIS_URL"] = url
    from service.settings import Settings
    from service.worker.runtime import WorkerRuntime
    from service.worker.sweeper import Sweeper

    settings = Settings(redis_url=url, key_prefix="backlog", sweep_grace=0, sweep_interval=5)
    runtime = WorkerRuntime(settings)
    engine = runtime.engine
    for i in range(sessions):
        uid = f"backlog:{i}"
        await engine.configure(uid, {"tasks": {"t": {"after": ["go"], "run": "noop"}}})
        await runtime.after(uid, await engine.fire(uid, "go"))
    await asyncio.sleep(0.05)
    sweeper = Sweeper(runtime)
    sent = await sweeper.pass_once()
    queued = getattr(sweeper, "queued", None)
    if queued is not None:
        await queued.aclose()
    print(f"\nbacklog of {sessions} queued messages, one sweep pass (grace 0): "
          f"{sent} sent again ({sent / sessions:.0%} duplicates)")  # fmt: skip
    await runtime.aclose()


def logger_cost(names: int) -> None:
    """µs to make a task's context (its logger) once this many instance names have run."""
    loop = asyncio.new_event_loop()
    from service.worker.python_tasks import TaskContext

    async def nothing(trigger: str, kwargs: Any) -> None:
        return None

    for i in range(names):
        TaskContext("u", f"t#{i}", 1, {}, nothing, loop).close()
    started = time.perf_counter()
    for i in range(names, names + 1000):
        context = TaskContext("u", f"t#{i}", 1, {}, nothing, loop)
        context.logger.info("x")
        context.close()
    per_context = (time.perf_counter() - started) / 1000 * 1e6
    loop.close()
    print(f"\ntask context + one log line after {names:,} instance names: {per_context:.1f} µs")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=500, help="tasks measured")
    parser.add_argument("--logger-names", type=int, default=10_000)
    args = parser.parse_args()
    with RedisServer() as server:
        asyncio.run(task_path(server.url, args.tasks))
        asyncio.run(preamble(server.url, 2000))
        asyncio.run(backlog(server.url, 200))
    logger_cost(args.logger_names)


if __name__ == "__main__":
    main()
