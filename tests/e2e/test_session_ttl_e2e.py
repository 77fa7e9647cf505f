"""TRIGGERS_SESSION_TTL without gaps, with real processes (issue 14, item 9): API and worker
with a 3 s session TTL; a task running 8 s (its worker renewing its 3 s lease) and a retry due
5 s later both complete, the session's webhook is delivered, and then the session expires with
everything of it, delivery records included."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import httpx
import pytest
from redis.asyncio import Redis

from service.engine import Engine
from tests.e2e.conftest import Stack, TaskServer, new_uid, stack_env, start_api, stop, wait_for
from tests.e2e.test_execution import fire


@pytest.mark.slow
@pytest.mark.timeout(240)
async def test_work_outlives_the_ttl_then_everything_expires_together(
    redis_url: str, tmp_path: Path, task_server: TaskServer
) -> None:
    prefix = f"ttl-{uuid.uuid4().hex[:8]}"
    env = stack_env(redis_url, prefix, str(tmp_path))
    env["TRIGGERS_SESSION_TTL"] = "3"
    api, url = start_api(env)
    stack = Stack(url, prefix, env, api, [])
    stack.start_worker()
    engine = Engine(Redis.from_url(redis_url, decode_responses=True), prefix=prefix)
    try:
        uid = new_uid()
        path = f"/ttl/{uid}"
        task_server.routes[path] = lambda body, headers: (204, {}, b"")
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            answer = await client.put(f"/sessions/{uid}/config", json={
                "tasks": {
                    "t_slow": {"after": ["go"], "run": "slow",
                               "withParams": {"cfg": {"seconds": 8}}},
                    "t_retry": {"after": ["go"], "run": "retry_until_depth", "maxRetries": 2,
                                "withParams": {"retries": {"times": 1, "cooldown": 5}}},
                },
                "webhooks": [{"url": task_server.url(path), "events": ["sessionFinalized"]}],
            })  # fmt: skip
            assert answer.status_code == 200, answer.text
            await fire(client, uid, "go")
        instances = await wait_for(engine, uid, lambda i: "t_retry#1" in i
                                   and i["t_slow#0"].status == "finished"
                                   and i["t_retry#1"].status == "finished", timeout=60)  # fmt: skip
        assert instances["t_slow#0"].metadata["attempt"] == 1  # never lost, never re-run
        deadline = time.monotonic() + 60
        while not [p for p, *_ in task_server.calls if p == path]:
            assert time.monotonic() < deadline, "sessionFinalized was never delivered"
            await asyncio.sleep(0.1)
        while await engine.client.keys(f"{prefix}:{{{uid}}}:*"):
            assert time.monotonic() < deadline + 30, await engine.client.keys(f"{prefix}:*")
            await asyncio.sleep(0.2)
    finally:
        await engine.aclose()
        for process in [*stack.workers, api]:
            stop(process)
