"""Worst accepted input per script, and reads of a 50,000-instance session (issue 14, items 1,
2 and 12).

For each script, the largest input the default limits (service/engine/limits.py, the
TRIGGERS_MAX_... settings) accept, and the time Redis spent in that one script call (INFO
commandstats: while a script runs, Redis serves nobody else). Goal: every figure under 50 ms.
Then a session of 50,000 instances: the time Redis spends in its longest single command while
the engine reads it (SLOWLOG), the GET latencies through the real API, and /healthz latency
while such GETs run. Printed figures only; nothing is asserted.

Run: ``.venv/bin/python bench/limits.py`` (starts its own redis-server; ``TRIGGERS_REDIS_URL``
to use another). ``--instances N`` for the big session (default 50,000; 0: scripts only).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
from redis.asyncio import Redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from service.engine import Engine
from service.engine.limits import Limits
from service.engine.scripts import RedisClient
from service.redis_server import RedisServer, free_port

LIMITS = Limits()
REPEAT = 5
ROWS: list[tuple[str, list[float], float]] = []


async def script_usec(client: RedisClient) -> int:
    stats = await client.info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("usec", 0))


async def measure(
    engine: Engine,
    label: str,
    call: Callable[[], Awaitable[Any]],
    setup: Callable[[], Awaitable[Any]] | None = None,
) -> Any:
    """Run ``call`` REPEAT times (``setup`` before each, untimed); record the time Redis spent
    in its script (ms) each time, and the best wall time. The machine is shared: the minimum
    is the figure least disturbed by other processes, the median shows the spread."""
    in_redis: list[float] = []
    walls: list[float] = []
    result: Any = None
    for _ in range(REPEAT):
        if setup is not None:
            await setup()
        usec = await script_usec(engine.client)
        start = time.perf_counter()
        result = await call()
        walls.append((time.perf_counter() - start) * 1000)
        in_redis.append((await script_usec(engine.client) - usec) / 1000)
    ROWS.append((label, in_redis, min(walls)))
    return result


def widest_config(prefix: str = "g") -> dict[str, Any]:
    """max_tasks tasks, each with max_triggers_per_list triggers in after and as many in
    unless, every trigger concerning exactly max_tasks_per_trigger tasks."""
    per_list = LIMITS.max_triggers_per_list
    triggers = LIMITS.max_tasks * per_list // LIMITS.max_tasks_per_trigger

    def names(kind: str, i: int) -> list[str]:
        return [f"{prefix}{kind}{(i * per_list + j) % triggers}" for j in range(per_list)]

    return {
        "tasks": {
            f"t{i}": {"after": names("a", i), "unless": names("u", i), "run": "P"}
            for i in range(LIMITS.max_tasks)
        }
    }


def chain_config(size: int) -> dict[str, Any]:
    tasks: dict[str, Any] = {"c0": {"after": ["go"], "run": "P"}}
    for i in range(1, size):
        tasks[f"c{i}"] = {"after": [], "andEvery": f"c{i - 1}", "run": "P"}
    return {"tasks": tasks}


async def scripts_at_the_limits(engine: Engine) -> None:
    uid = "bench:wide"
    wide, other = widest_config(), widest_config("h")
    shape = f"{LIMITS.max_tasks} tasks x 2x{LIMITS.max_triggers_per_list} triggers"
    await measure(engine, f"configure PUT {shape}", lambda: engine.configure(uid, wide),
                  setup=lambda: engine.delete(uid))  # fmt: skip
    await measure(engine, "configure PUT the same again",
                  lambda: engine.configure(uid, wide, replace=True))  # fmt: skip
    turn = [wide, other]

    async def swap() -> Any:
        turn.reverse()
        return await engine.configure(uid, turn[0], replace=True)

    await measure(engine, "configure PUT all tasks on other triggers", swap)
    changed = dict(turn[0]["tasks"]["t0"])
    changed["after"] = ["fresh", *changed["after"][1:]]
    await measure(engine, f"configure PATCH 1 task into {LIMITS.max_tasks}",
                  lambda: engine.configure(uid, {"tasks": {"t0": changed}}))  # fmt: skip
    chain = chain_config(LIMITS.max_tasks)
    await measure(engine, f"configure PUT a {LIMITS.max_tasks}-task andEvery chain",
                  lambda: engine.configure("bench:chain", chain, replace=True))  # fmt: skip
    await measure(engine, f"readConfig of {LIMITS.max_tasks} tasks",
                  lambda: engine.get_config(uid))  # fmt: skip

    # A trigger concerning max_tasks_per_trigger tasks, each with a full after whose other
    # triggers have all fired (prefill reads them all) and a full unless: a fresh session per
    # run, so that every run creates and schedules an instance of each task.
    per_list = LIMITS.max_triggers_per_list
    width = LIMITS.max_tasks_per_trigger
    tasks = {
        f"t{i}": {
            "after": ["a"] + [f"x{j}" for j in range(per_list - 1)],
            "unless": [f"u{j}" for j in range(per_list)],
            "run": "P",
        }
        for i in range(width)
    }
    fans = [0]

    async def fresh_fan() -> None:
        fans[0] += 1
        await engine.configure(f"bench:fan{fans[0]}", {"tasks": tasks})
        for j in range(per_list - 1):
            await engine.fire(f"bench:fan{fans[0]}", f"x{j}", {"j": j})

    outcome = await measure(
        engine, f"fire into {width} tasks x {per_list}-trigger after and unless",
        lambda: engine.fire(f"bench:fan{fans[0]}", "a", {"k": 1}), setup=fresh_fan,
    )  # fmt: skip
    fan = f"bench:fan{fans[0]}"
    names = iter(outcome.scheduled)
    claims: dict[str, str] = {}

    async def claim_next() -> None:
        name = next(names)
        claims.clear()
        claims[name] = (await engine.claim(fan, name)).token or ""

    async def complete_claimed() -> Any:
        [(name, token)] = claims.items()
        return await engine.complete(fan, name, token, {"r": 1})

    await measure(engine, "complete (cascade + finalization check)", complete_claimed,
                  setup=claim_next)  # fmt: skip
    paged = "bench:page"
    every = {f"p{i}": {"after": [], "andEvery": "page", "run": "P"} for i in range(width)}
    await engine.configure(paged, {"tasks": every})
    for _ in range(engine.reader.page // width):
        await engine.fire(paged, "page", {"n": 1})
    await measure(engine, f"readSession at TRIGGERS_PAGE_SIZE ({engine.reader.page}) instances",
                  lambda: engine.snapshot(paged))  # fmt: skip

    per = LIMITS.max_tasks_per_trigger
    count = [0]

    async def almost_final() -> None:
        count[0] += 1
        finals = f"bench:final{count[0]}"
        many = {f"f{i}": {"after": [f"g{i // per}"], "run": "P"}
                for i in range(LIMITS.max_tasks - 1)}  # fmt: skip
        many["last"] = {"after": ["end"], "run": "P"}
        await engine.configure(finals, {"tasks": many})
        for group in range((LIMITS.max_tasks - 1) // per + 1):
            await engine.fire(finals, f"g{group}")
        for i in range(LIMITS.max_tasks - 1):
            token = (await engine.claim(finals, f"f{i}#0")).token or ""
            await engine.complete(finals, f"f{i}#0", token, {})
        await engine.fire(finals, "end")
        claims.clear()
        claims[finals] = (await engine.claim(finals, "last#0")).token or ""

    async def finish_last() -> Any:
        [(finals, token)] = claims.items()
        return await engine.complete(finals, "last#0", token, {})

    await measure(engine, f"complete the last of {LIMITS.max_tasks} tasks (finalizes)",
                  finish_last, setup=almost_final)  # fmt: skip

    for open_count in (100, LIMITS.max_open_instances):
        opens = [0]

        async def fill(open_count: int = open_count, opens: list[int] = opens) -> None:
            """A fresh session holding ``open_count`` unstarted instances (waiting for b)."""
            opens[0] += 1
            uid = f"bench:open{open_count}:{opens[0]}"
            await engine.configure(
                uid, {"tasks": {"w": {"after": ["b"], "andEvery": "page", "run": "P"}}}
            )
            await in_batches(open_count, lambda _: engine.fire(uid, "page", {"p": 1}))

        def fire_b(open_count: int = open_count, opens: list[int] = opens) -> Awaitable[Any]:
            return engine.fire(f"bench:open{open_count}:{opens[0]}", "b")

        await measure(engine, f"fire into {open_count} unstarted instances", fire_b, setup=fill)


async def in_batches(count: int, call: Callable[[int], Awaitable[Any]], size: int = 50) -> None:
    for first in range(0, count, size):
        await asyncio.gather(*(call(i) for i in range(first, min(count, first + size))))


async def big_session(engine: Engine, uid: str, instances: int) -> None:
    """``instances`` instances of 250 andEvery tasks, with kwargs of a few hundred bytes."""
    width = LIMITS.max_tasks_per_trigger
    tasks = {f"p{i}": {"after": [], "andEvery": "page", "run": "P"} for i in range(width)}
    await engine.configure(uid, {"tasks": tasks})
    kwargs = {"page": 3, "responses": {f"q{i}": "yes" for i in range(20)}, "source": "web"}
    for _ in range(instances // width):
        await engine.fire(uid, "page", kwargs)


async def longest_command(
    client: RedisClient, call: Callable[[], Awaitable[Any]]
) -> tuple[float, str]:
    """Run ``call``; the longest single command Redis ran meanwhile (ms) and its name."""
    await client.config_set("slowlog-log-slower-than", 0)
    await client.config_set("slowlog-max-len", 100_000)
    await client.slowlog_reset()
    await call()
    entries = await client.slowlog_get(100_000)
    await client.config_set("slowlog-log-slower-than", 10_000)
    worst = max(entries, key=lambda e: e["duration"])
    command = worst["command"]
    text = command.decode(errors="replace") if isinstance(command, bytes) else str(command)
    return worst["duration"] / 1000, text.split(" ", 1)[0]


@contextmanager
def api_server(url: str, prefix: str) -> Iterator[str]:
    """The real API app in its own uvicorn process (as deployed: the bench's client threads
    must not share its interpreter lock), on a free loopback port."""
    port = free_port()
    data = tempfile.mkdtemp(prefix="bench-limits-")
    env = {**os.environ, "TRIGGERS_REDIS_URL": url, "TRIGGERS_AUTH": "off",
           "TRIGGERS_KEY_PREFIX": prefix, "TRIGGERS_DATA_DIR": data}  # fmt: skip
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--factory", "service.api.app:create_app",
         "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
        env=env, cwd=str(Path(__file__).resolve().parent.parent),
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(base + "/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError("the API server did not start")
            time.sleep(0.1)
        yield base
    finally:
        process.terminate()
        process.wait(30)
        shutil.rmtree(data, ignore_errors=True)


def probe_health(base: str, stop: threading.Event, latencies: list[float]) -> None:
    with httpx.Client(base_url=base, timeout=60) as client:
        while not stop.is_set():
            start = time.perf_counter()
            client.get("/healthz")
            latencies.append((time.perf_counter() - start) * 1000)
            time.sleep(0.01)


def http_reads(base: str, uid: str, rounds: int) -> dict[str, list[float]]:
    paths = {
        "GET /sessions/{uid}": f"/sessions/{uid}",
        "GET /sessions/{uid}/instances (first page)": f"/sessions/{uid}/instances",
        "GET .../instances?status=scheduled": f"/sessions/{uid}/instances?status=scheduled",
        "GET /sessions/{uid}/tasks/unresolved": f"/sessions/{uid}/tasks/unresolved",
        "GET /sessions/{uid}/instances/unresolved": f"/sessions/{uid}/instances/unresolved",
    }
    found: dict[str, list[float]] = {label: [] for label in paths}
    with httpx.Client(base_url=base, timeout=120) as client:
        for _ in range(rounds):
            for label, path in paths.items():
                start = time.perf_counter()
                answer = client.get(path)
                found[label].append((time.perf_counter() - start) * 1000)
                assert answer.status_code == 200, answer.text[:300]
    return found


async def run(url: str, instances: int, rounds: int) -> None:
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    engine = Engine(Redis.from_url(url, decode_responses=True), prefix=prefix, limits=LIMITS)
    await engine.load_scripts()
    await scripts_at_the_limits(engine)
    print(f"Limits: {LIMITS}\n")
    print(f"One script call each, {REPEAT} runs: time in Redis (min / median ms), best wall ms")
    print(f"{'worst accepted input':<58} {'min':>7} {'median':>7} {'wall':>7}")
    for label, in_redis, wall in ROWS:
        print(f"{label:<58} {min(in_redis):>7.1f} {statistics.median(in_redis):>7.1f} {wall:>7.1f}")

    if instances <= 0:
        await engine.aclose()
        return
    uid = "bench:big"
    await big_session(engine, uid, instances)
    print(f"\nA session of {instances:,} instances ({LIMITS.max_tasks_per_trigger} tasks):")
    for label, call in (
        ("engine.snapshot (all instances)", lambda: engine.snapshot(uid)),
        ("engine.snapshot (first 1,000)", lambda: engine.snapshot(uid, max_instances=1000)),
        ("engine.unresolved", lambda: engine.unresolved(uid)),
        ("engine.instances_page (1,000)", lambda: engine.instances_page(uid)),
    ):
        start = time.perf_counter()
        worst, name = await longest_command(engine.client, call)
        wall = (time.perf_counter() - start) * 1000
        print(f"  {label:<40} longest Redis command {worst:6.1f} ms ({name}); wall {wall:7.0f} ms")

    with api_server(url, prefix) as base:
        stop = threading.Event()
        health: list[float] = []
        prober = threading.Thread(target=probe_health, args=(base, stop, health))
        prober.start()
        reads = await asyncio.to_thread(http_reads, base, uid, rounds)
        stop.set()
        prober.join()
    print(f"\nHTTP on that session ({rounds} rounds; median / max ms):")
    for label, values in reads.items():
        print(f"  {label:<48} {statistics.median(values):8.1f} {max(values):8.1f}")
    print(f"  {'/healthz meanwhile':<48} {statistics.median(health):8.1f} {max(health):8.1f}")
    await engine.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--instances", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with ExitStack() as stack:
        url = os.environ.get("TRIGGERS_REDIS_URL")
        if not url:
            url = stack.enter_context(RedisServer()).url
        asyncio.run(run(url, args.instances, args.rounds))


if __name__ == "__main__":
    main()
