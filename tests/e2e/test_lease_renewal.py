"""Leases under faults (issue 14, item 3), with real processes.

* A Redis blip (the state Redis stopped for 2.5 s and started again on the same port and data
  folder) must not cost a running task its lease: renewals are retried until they succeed or
  the lease is really gone, so the sweeper never starts a second run beside the first.
* A lease that is really lost (its worker frozen past the expiry, the instance claimed again
  by another worker) stops the first run: its HTTP request is closed, its Python task sees
  ``context.cancelled`` and can no longer fire, and its result is never reported.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import httpx
import pytest
from redis.asyncio import Redis

from service.engine import Engine, Instance
from service.redis_server import RedisServer
from tests.e2e.conftest import Stack, new_uid, wait_for
from tests.e2e.isolated import SlowEndpoints, isolated_stack, slow_endpoints
from tests.e2e.test_execution import configure, fire

TASK_MODULES = "tests.tasks_for_tests,tests.e2e.lease_tasks"


@pytest.fixture(scope="module")
def endpoints() -> Iterator[SlowEndpoints]:
    with slow_endpoints() as found:
        yield found


def finished(name: str) -> Callable[[dict[str, Instance]], bool]:
    return lambda instances: name in instances and instances[name].status == "finished"


async def until(condition: Callable[[], Awaitable[bool]], what: str, timeout: float = 40) -> None:
    deadline = time.monotonic() + timeout
    while not await condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


@pytest.mark.timeout(240)
async def test_a_redis_blip_during_a_long_task_costs_no_second_run(
    redis_url: str, tmp_path: Path, endpoints: SlowEndpoints
) -> None:
    """Lease 6 s, a 20 s HTTP task, the state Redis away for 2.5 s: one call, one run."""
    data = tmp_path / "state"
    state = RedisServer(data_dir=data, appendonly=True).start()
    engine = Engine(Redis.from_url(state.url, decode_responses=True), prefix="", finalize=False)
    try:
        with isolated_stack(
            state.url, tmp_path / "stack", TRIGGERS_BROKER_URL=redis_url,
            TRIGGERS_LEASE_SECONDS="6", TRIGGERS_SWEEP_INTERVAL="0.5",
        ) as stack:  # fmt: skip
            engine.prefix = stack.prefix
            engine.pending_key = f"{stack.prefix}:pending"
            uid = new_uid()
            path = f"/hold/20/{uid}"
            async with httpx.AsyncClient(base_url=stack.api_url, timeout=10) as client:
                await configure(client, uid, {"t": {"after": ["go"], "run": endpoints.url(path)}})
                await fire(client, uid, "go")

            async def calling() -> bool:
                return endpoints.running.get(path) == 1

            await until(calling, "the call")
            await asyncio.sleep(1)
            state.stop()
            await asyncio.sleep(2.5)
            state = RedisServer(data_dir=data, appendonly=True, port=state.port).start()
            instances = await wait_for(engine, uid, finished("t#0"), timeout=90)
            await asyncio.sleep(3)  # a second run would have started long before now
            assert len(endpoints.calls_to(path)) == 1
            assert endpoints.most_at_once[path] == 1
            assert instances["t#0"].metadata["attempt"] == 1
            assert instances["t#0"].metadata["result"] == {"attempt": 1}
    finally:
        await engine.aclose()
        state.stop()


@pytest.fixture(scope="module")
def lease_stack(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    folder = tmp_path_factory.mktemp("lease")
    with isolated_stack(
        redis_url, folder, TRIGGERS_LEASE_SECONDS="4", TRIGGERS_TASK_MODULES=TASK_MODULES
    ) as stack:
        yield stack


@pytest.fixture
async def lease_engine(lease_stack: Stack, redis_url: str) -> AsyncIterator[Engine]:
    engine = Engine(Redis.from_url(redis_url, decode_responses=True), prefix=lease_stack.prefix,
                    finalize=False)  # fmt: skip
    yield engine
    await engine.aclose()


def one_worker(stack: Stack) -> subprocess.Popen[bytes]:
    """The stack's workers replaced by one fresh worker: it will run the first attempt."""
    stack.kill_workers()
    return stack.start_worker()


@contextlib.asynccontextmanager
async def frozen(
    stack: Stack, first: subprocess.Popen[bytes], started: Callable[[], Awaitable[bool]]
) -> AsyncIterator[None]:
    """Once the first attempt runs, its worker is frozen (SIGSTOP) while a second worker takes
    over (the lease expires, the sweeper re-dispatches, the second claims: attempt 2); it is
    let go (SIGCONT) when the block ends, still holding the run it lost."""
    await until(started, "the first attempt")
    stack.start_worker()
    os.killpg(first.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.killpg(first.pid, signal.SIGCONT)


@pytest.mark.timeout(240)
async def test_a_lost_lease_closes_the_first_http_run_and_never_reports_it(
    lease_stack: Stack, lease_engine: Engine, endpoints: SlowEndpoints
) -> None:
    uid = new_uid()
    path = f"/hold/90/{uid}"  # the first attempt would be answered after 90 s
    first = one_worker(lease_stack)
    async with httpx.AsyncClient(base_url=lease_stack.api_url, timeout=10) as client:
        await configure(client, uid, {"t": {"after": ["go"], "run": endpoints.url(path)}})
        await fire(client, uid, "go")

    async def first_call() -> bool:
        return endpoints.running.get(path) == 1

    async def second_call() -> bool:
        return len(endpoints.calls_to(path)) == 2

    async with frozen(lease_stack, first, first_call):
        await until(second_call, "the second attempt", timeout=60)
    instances = await wait_for(lease_engine, uid, finished("t#0"), timeout=60)
    assert instances["t#0"].metadata["attempt"] == 2
    assert instances["t#0"].metadata["result"] == {"attempt": 2}

    async def first_call_closed() -> bool:
        return (path, "abandoned") in [(p, how) for p, how, _ in endpoints.ended]

    # once its worker runs again, the run that lost its lease closes its request at once
    # (it would otherwise wait for the answer, 90 s after the call began)
    await until(first_call_closed, "the first call to be closed", timeout=30)
    instances = (await lease_engine.snapshot(uid)).instances
    assert instances["t#0"].metadata["result"] == {"attempt": 2}


@pytest.mark.timeout(240)
async def test_a_lost_lease_cancels_the_first_python_run(
    lease_stack: Stack, lease_engine: Engine, tmp_path: Path
) -> None:
    uid = new_uid()
    first = one_worker(lease_stack)
    async with httpx.AsyncClient(base_url=lease_stack.api_url, timeout=10) as client:
        await configure(client, uid, {
            "t": {"after": ["go"], "run": "until_cancelled",
                  "withParams": {"cfg": {"folder": str(tmp_path)}}},
            "t_late": {"after": [], "andEvery": "late", "run": "echo"},
        })  # fmt: skip
        await fire(client, uid, "go")

    async def attempt(number: int) -> bool:
        instances = (await lease_engine.snapshot(uid)).instances
        return "t#0" in instances and instances["t#0"].metadata.get("attempt") == number

    async with frozen(lease_stack, first, lambda: attempt(1)):
        await until(lambda: attempt(2), "the second attempt", timeout=60)
    instances = await wait_for(lease_engine, uid, finished("t_late#0"), timeout=60)
    assert instances["t#0"].metadata["result"] == {"attempt": 2}

    async def first_run_ended() -> bool:
        return (tmp_path / "1.json").exists()

    # running again, the first run sees `cancelled` at once (its loop would go on for 60 s)
    await until(first_run_ended, "the first run to see its cancellation", timeout=30)
    report = json.loads((tmp_path / "1.json").read_text())
    assert report == {"cancelled": True, "fire": "TaskCancelled"}
    assert json.loads((tmp_path / "2.json").read_text()) == {"cancelled": False, "fire": "fired"}
    snapshot = await lease_engine.snapshot(uid)
    assert snapshot.latestKwargs["late"] == {"attempt": 2}
    assert [name for name in snapshot.instances if name.startswith("t_late")] == ["t_late#0"]
    assert snapshot.instances["t#0"].metadata["result"] == {"attempt": 2}
