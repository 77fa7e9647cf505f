"""Webhook deliveries across a Redis restart (issue 14, item 5): the attempt's due time lives in
Redis, so a Dramatiq delayed message lost in the restart delays the delivery, never loses it."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from service.engine import Engine
from service.redis_server import RedisServer
from service.webhooks.store import Delivery, DeliveryStore
from tests.e2e.conftest import Stack, TaskServer, new_uid, stack_env, start_api, stop
from tests.e2e.test_execution import fire


async def wait_delivery(store: DeliveryStore, uid: str, state: str, timeout: float) -> Delivery:
    """Poll the session's only delivery until it is in ``state`` (Redis may be restarting)."""
    deadline = time.monotonic() + timeout
    found: list[Delivery] = []
    while time.monotonic() < deadline:
        try:
            found = await store.all(uid)
        except RedisConnectionError:
            found = []
        if found and found[0].state == state:
            return found[0]
        await asyncio.sleep(0.1)
    raise AssertionError(f"deliveries: {found}")


@pytest.mark.slow
@pytest.mark.timeout(240)
async def test_redis_restarted_during_a_scheduled_retry_the_delivery_still_completes(
    tmp_path: Path, task_server: TaskServer
) -> None:
    data = tmp_path / "redis"
    server = RedisServer(data_dir=data, appendonly=True).start()
    (tmp_path / "data").mkdir()
    env = stack_env(server.url, "whrestart", str(tmp_path / "data"))
    env["TRIGGERS_WEBHOOK_RETRY_SCHEDULE"] = "4,4"  # the retry waits 3.2-4.8 s in Dramatiq
    api, url = start_api(env)
    stack = Stack(url, "whrestart", env, api, [])
    stack.start_worker()
    engine = Engine(Redis.from_url(server.url, decode_responses=True), prefix="whrestart")
    store = DeliveryStore(engine)
    try:
        uid = new_uid()
        path = f"/restart/{uid}"
        answers = iter([(500, {}, b"down")])
        task_server.routes[path] = lambda body, headers: next(answers, (200, {}, b"{}"))
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            answer = await client.put(f"/sessions/{uid}/config", json={
                "tasks": {"t": {"after": ["go"], "run": "echo"}},
                "webhooks": [{"url": task_server.url(path), "events": ["sessionFinalized"]}],
            })  # fmt: skip
            assert answer.status_code == 200, answer.text
            await fire(client, uid, "go")
        await wait_delivery(store, uid, "retrying", timeout=60)  # 500: a retry is scheduled
        server.stop()  # the delayed message goes with it (parked, or never promoted)
        await asyncio.sleep(1)
        server = RedisServer(data_dir=data, appendonly=True, port=server.port).start()
        delivery = await wait_delivery(store, uid, "delivered", timeout=90)
        assert [attempt.status for attempt in delivery.attempts] == [500, 200]
        calls = [body for p, body, _, _ in task_server.calls if p == path]
        assert len(calls) == 2
    finally:
        await engine.aclose()
        for process in [*stack.workers, api]:
            stop(process)
        server.stop()
