"""Crash promises: killed workers, a killed API between commit and enqueue, duplicate
messages, a restarted Redis, a restarted broker. Every runnable instance ends resolved, none
runs twice, no cascade is lost or doubled.

A killed worker and a restarted broker are tried on every topology (tests/e2e/conftest.py:
state on one Redis, or on a Redis Cluster with RabbitMQ or a standalone Redis as the broker);
the other promises are the engine's and are tried on the standalone Redis only."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from redis.asyncio import Redis

from service.engine import Engine, Instance
from service.engine.keys import session_keys
from service.redis_server import RedisServer
from tests.e2e.conftest import (
    SCALE_OUT,
    Stack,
    TaskServer,
    new_uid,
    stack_env,
    start_api,
    stop,
    wait_for,
)
from tests.e2e.test_execution import configure, fire, ok


@pytest.mark.timeout(120)
async def test_worker_killed_mid_task_the_instance_still_finishes_once(
    stack: Stack, client: httpx.AsyncClient, engine_e2e: Engine
) -> None:
    uid = new_uid()
    await configure(client, uid, {
        "t_slow": {"after": ["go"], "run": "slow", "withParams": {"cfg": {"seconds": 2}}},
        "t_down": {"after": [], "andEvery": "t_slow", "run": "echo"},
    })  # fmt: skip
    await fire(client, uid, "go")
    await wait_for(engine_e2e, uid, lambda i: i["t_slow#0"].status == "running")
    stack.kill_workers()
    stack.start_worker()
    instances = await wait_for(
        engine_e2e, uid, lambda i: i["t_slow#0"].status == "finished" and "t_down#0" in i
        and i["t_down#0"].status == "finished", timeout=40,
    )  # fmt: skip
    slow = instances["t_slow#0"]
    assert slow.metadata["attempt"] == 2  # re-dispatched after the lease expired, run again
    assert slow.metadata["result"] == {"slept": True}
    await asyncio.sleep(2)  # a late redelivery of the dead worker's message changes nothing
    instances = (await engine_e2e.snapshot(uid)).instances
    assert [n for n in instances if n.startswith("t_down")] == ["t_down#0"]  # one cascade


@pytest.mark.timeout(120)
@pytest.mark.parametrize("stack", ["redis"], indirect=True)
async def test_api_killed_after_commit_before_enqueue_the_sweeper_dispatches(
    stack: Stack, engine_e2e: Engine
) -> None:
    uid = new_uid()
    env = dict(stack.env, TRIGGERS_FAILPOINT="after-commit-before-enqueue")
    api, url = start_api(env)
    try:
        async with httpx.AsyncClient(base_url=url, timeout=10) as doomed:
            await configure(doomed, uid, {"t": {"after": ["go"], "run": "echo"}})
            with pytest.raises(httpx.HTTPError):
                await doomed.post(f"/sessions/{uid}/fire", json={"trigger": "go"})
        assert api.wait(10) == 75  # the failpoint's exit: committed, never enqueued
        instance = await engine_e2e.instance(uid, "t#0")
        assert instance.status == "scheduled"
        outbox = session_keys(uid, stack.prefix)[8]
        assert await engine_e2e.client.zscore(outbox, "t#0") is not None
        instances = await wait_for(engine_e2e, uid, lambda i: i["t#0"].status == "finished")
        assert instances["t#0"].metadata["attempt"] == 1
    finally:
        stop(api)


def send_duplicates(env: dict[str, str], uid: str, name: str, count: int) -> None:
    """Deliver the same (uid, instance) message ``count`` times, from another process."""
    code = (
        "import sys\nfrom service.worker.actors import run_instance\n"
        f"for _ in range({count}): run_instance.send({uid!r}, {name!r})\n"
    )
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=60)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("stack", ["redis"], indirect=True)
async def test_duplicate_deliveries_run_once_and_cascade_once(
    stack: Stack, client: httpx.AsyncClient, engine_e2e: Engine, task_server: TaskServer
) -> None:
    uid = new_uid()
    task_server.routes["/dup"] = ok({"done": True})
    await configure(client, uid, {
        "t_ext": {"after": ["go"], "run": task_server.url("/dup"), "using": "external"},
        "t_down": {"after": [], "andEvery": "t_ext", "run": "echo"},
    })  # fmt: skip
    await fire(client, uid, "go")  # external: scheduled, no message sent by the API
    await asyncio.to_thread(send_duplicates, stack.env, uid, "t_ext#0", 25)
    instances = await wait_for(engine_e2e, uid, lambda i: "t_down#0" in i
                               and i["t_down#0"].status == "finished")  # fmt: skip
    await asyncio.sleep(1.5)
    instances = (await engine_e2e.snapshot(uid)).instances
    calls = [b for b in task_server.calls_to("/dup") if b["session"] == uid]
    assert len(calls) == 1  # 25 deliveries, one execution
    assert instances["t_ext#0"].metadata["attempt"] == 1
    assert [n for n in instances if n.startswith("t_down")] == ["t_down#0"]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("stack", ["redis"], indirect=True)
async def test_duplicates_of_a_cooling_down_retry_never_run_early_or_twice(
    stack: Stack, client: httpx.AsyncClient, engine_e2e: Engine, task_server: TaskServer
) -> None:
    uid = new_uid()
    answers = iter([(503, {"Retry-After": "2"}, b""), (200, {}, b"{}")])
    task_server.routes["/once-busy"] = lambda body, headers: next(answers)
    await configure(client, uid, {"t": {"after": ["go"], "run": task_server.url("/once-busy")}})
    await fire(client, uid, "go")
    await wait_for(engine_e2e, uid, lambda i: "t#1" in i)
    await asyncio.to_thread(send_duplicates, stack.env, uid, "t#1", 20)
    instances = await wait_for(engine_e2e, uid, lambda i: i["t#1"].status == "finished")
    times = [t for _, body, _, t in task_server.calls if body.get("session") == uid]
    assert len(times) == 2
    assert times[1] - times[0] >= 1.95
    assert instances["t#1"].metadata["attempt"] == 1


@pytest.mark.timeout(180)
async def test_redis_restart_work_resumes_nothing_lost(tmp_path: Path) -> None:
    """A Redis of its own (state and broker), stopped and started again on the same port."""
    data = tmp_path / "redis"
    server = RedisServer(data_dir=data, appendonly=True).start()
    (tmp_path / "data").mkdir()
    env = stack_env(server.url, "restart", str(tmp_path / "data"))
    api, url = start_api(env)
    stack = Stack(url, "restart", env, api, [])
    stack.start_worker()
    engine = Engine(Redis.from_url(server.url, decode_responses=True), prefix="restart",
                    finalize=False)  # fmt: skip
    try:
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            uid = new_uid()
            await configure(client, uid, {
                "t_first": {"after": ["a"], "run": "echo"},
                "t_page": {"after": [], "andEvery": "page", "run": "echo"},
            })  # fmt: skip
            await fire(client, uid, "a")
            await wait_for(engine, uid, lambda i: i["t_first#0"].status == "finished")
            server.stop()
            down = await client.post(f"/sessions/{uid}/fire", json={"trigger": "page"})
            assert down.status_code == 503  # refused, nothing half-done
            server = RedisServer(data_dir=data, appendonly=True, port=server.port).start()
            for page in range(5):
                await fire(client, uid, "page", n=page)
            instances = await wait_for(engine, uid, lambda i: sum(
                1 for n, x in i.items() if n.startswith("t_page") and x.status == "finished"
            ) == 5, timeout=60)  # fmt: skip
            assert instances["t_first#0"].status == "finished"
            assert json.dumps(sorted(n for n in instances)) == json.dumps(
                sorted(["t_first#0", *(f"t_page#{n}" for n in range(5))])
            )
    finally:
        await engine.aclose()
        for process in [*stack.workers, api]:
            stop(process)
        server.stop()


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("stack", SCALE_OUT, indirect=True)
async def test_broker_restarted_work_resumes_nothing_lost(
    stack: Stack, client: httpx.AsyncClient, engine_e2e: Engine
) -> None:
    """The broker stops and starts again on its port and data folder: a fire while it is down
    is committed (its message waits in the session's outbox for the sweeper), workers
    reconnect, and every instance runs once."""
    where = stack.topology
    assert where is not None and where.stop_broker and where.start_broker
    uid = new_uid()
    await configure(client, uid, {
        "t_first": {"after": ["a"], "run": "echo"},
        "t_page": {"after": [], "andEvery": "page", "run": "echo"},
    })  # fmt: skip
    await fire(client, uid, "a")
    await wait_for(engine_e2e, uid, lambda i: i["t_first#0"].status == "finished")
    where.stop_broker()
    try:
        await fire(client, uid, "page", n=0)
    finally:
        where.start_broker()
    for page in range(1, 4):
        await fire(client, uid, "page", n=page)

    def pages_finished(instances: dict[str, Instance]) -> int:
        return sum(1 for n, x in instances.items()
                   if n.startswith("t_page") and x.status == "finished")  # fmt: skip

    instances = await wait_for(engine_e2e, uid, lambda i: pages_finished(i) == 4, timeout=120)
    assert sorted(instances) == sorted(["t_first#0", *(f"t_page#{n}" for n in range(4))])
    assert all(i.metadata["attempt"] == 1 for i in instances.values())
    assert sorted(i.metadata["result"]["kwargs"]["page"]["n"] for n, i in instances.items()
                  if n.startswith("t_page")) == [0, 1, 2, 3]  # fmt: skip
