"""A session deleted (or expired) and created again under the same UID is a new session for
everyone outside: its HTTP tasks get new Idempotency-Keys and its webhooks new ids, and its
own sessionFinalized is delivered although the old incarnation's delivery was recorded."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest

from service.engine import Engine
from tests.e2e.conftest import TaskServer, new_uid
from tests.e2e.test_execution import fire, ok
from tests.e2e.test_webhooks import hooks_to


async def wait_calls(task_server: TaskServer, path: str, count: int, timeout: float = 40) -> None:
    deadline = time.monotonic() + timeout
    while len(hooks_to(task_server, path)) < count:
        if time.monotonic() > deadline:
            raise AssertionError(f"{path}: {len(hooks_to(task_server, path))} calls")
        await asyncio.sleep(0.1)


async def session_id(client: httpx.AsyncClient, uid: str) -> str:
    answer = await client.get(f"/sessions/{uid}")
    assert answer.status_code == 200, answer.text
    value: str = answer.json()["sessionId"]
    return value


@pytest.mark.timeout(120)
@pytest.mark.parametrize("removal", ["delete", "expiry"])
async def test_a_new_session_under_an_old_uid_never_repeats_keys_or_webhook_ids(
    removal: str, client: httpx.AsyncClient, engine_e2e: Engine, task_server: TaskServer
) -> None:
    uid = new_uid()
    task_path, hook_path = f"/idem/{uid}", f"/final/{uid}"
    task_server.routes[task_path] = ok({})
    task_server.routes[hook_path] = lambda body, headers: (204, {}, b"")
    tasks: dict[str, Any] = {"t": {"after": ["go"], "run": task_server.url(task_path)}}
    hooks = [{"url": task_server.url(hook_path), "events": ["sessionFinalized"]}]
    ids = []
    for incarnation in (1, 2):
        answer = await client.put(
            f"/sessions/{uid}/config", json={"tasks": tasks, "webhooks": hooks}
        )
        assert answer.status_code == 200, answer.text
        ids.append(await session_id(client, uid))
        await fire(client, uid, "go")
        await wait_calls(task_server, hook_path, incarnation)
        if incarnation == 1 and removal == "delete":
            assert (await client.delete(f"/sessions/{uid}")).status_code == 204
        elif incarnation == 1:  # as a TTL expiry: the session's keys go, its delivery log stays
            assert await engine_e2e.delete(uid)
    assert ids[0] != ids[1]
    keys = [headers["idempotency-key"] for _, headers in hooks_to(task_server, task_path)]
    assert keys == [f"{uid}/t#0/{ids[0]}", f"{uid}/t#0/{ids[1]}"]
    webhook_ids = [headers["webhook-id"] for _, headers in hooks_to(task_server, hook_path)]
    assert len(set(webhook_ids)) == 2
