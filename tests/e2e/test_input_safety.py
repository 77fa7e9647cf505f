"""Issue 8 items 4, 5 and 7 end to end: real API and worker processes, endpoints on loopback.

Non-ASCII task names reach their HTTP endpoint; every way into ``failed`` sends
``instanceFailed``; a session deleted under a running task is dropped quietly by the worker;
a subscription's own secret signs its deliveries.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import threading
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from standardwebhooks.webhooks import Webhook

from service.engine import Engine
from tests.e2e.conftest import Stack, TaskServer, new_uid, wait_for
from tests.e2e.test_execution import fire, ok
from tests.e2e.test_webhooks import hooks_to, secret, wait_deliveries

TENANT_SECRET = "whsec_" + base64.b64encode(b"tenant-secret-0123456789abcdef").decode()


@pytest.mark.parametrize("task", ["vérifier", "比较", "t 100%"])
async def test_non_ascii_task_names_reach_their_http_endpoint(
    stack: Stack, client: httpx.AsyncClient, engine_e2e: Engine, task_server: TaskServer,
    task: str,
) -> None:  # fmt: skip
    uid = new_uid()
    path = f"/unicode/{uid}"
    task_server.routes[path] = ok({"seen": True})
    answer = await client.put(f"/sessions/{uid}/config", json={
        "tasks": {task: {"after": ["go"], "run": task_server.url(path)}}})  # fmt: skip
    assert answer.status_code == 200, answer.text
    await fire(client, uid, "go")
    name = f"{task}#0"
    instances = await wait_for(engine_e2e, uid, lambda i: name in i and i[name].resolved, 60)
    assert instances[name].status == "finished", instances[name].metadata
    [(body, headers)] = hooks_to(task_server, path)
    assert body["instance"] == name and body["task"] == task
    session_id = (await engine_e2e.snapshot(uid)).sessionId
    assert headers["idempotency-key"] == f"{uid}/{quote(name, safe=' #')}/{session_id}"
    raw = json.dumps(body, separators=(",", ":"), ensure_ascii=False)
    Webhook(secret(stack)).verify(raw, headers)


async def test_an_unknown_runner_sends_instance_failed(
    client: httpx.AsyncClient, engine_e2e: Engine, task_server: TaskServer
) -> None:
    """A runner that is gone (a plug-in uninstalled after the configuration was accepted)."""
    uid = new_uid()
    path = f"/failed/{uid}"
    task_server.routes[path] = lambda body, headers: (204, {}, b"")
    await engine_e2e.configure(uid, {
        "tasks": {"t": {"after": ["go"], "run": "echo", "using": "uninstalled"}},
        "webhooks": [{"url": task_server.url(path), "events": ["instanceFailed"]}],
    })  # fmt: skip
    await fire(client, uid, "go")
    await wait_deliveries(client, uid, lambda d: d and d[0]["state"] == "delivered", 60)
    [(body, _)] = hooks_to(task_server, path)
    assert body["type"] == "instanceFailed"
    assert body["data"]["instance"] == "t#0"
    assert body["data"]["exceptionType"] == "triggers.UnknownRunner"


async def test_an_operator_setting_failed_sends_instance_failed(
    client: httpx.AsyncClient, task_server: TaskServer
) -> None:
    uid = new_uid()
    path = f"/operator/{uid}"
    task_server.routes[path] = lambda body, headers: (204, {}, b"")
    await client.put(f"/sessions/{uid}/config", json={
        "tasks": {"t": {"after": ["go"], "run": "echo", "using": "external"}},
        "webhooks": [{"url": task_server.url(path), "events": ["instanceFailed"]}],
    })  # fmt: skip
    await fire(client, uid, "go")
    answer = await client.post(f"/sessions/{uid}/instances/t%230/status", json={
        "status": "failed", "metadata": {"exceptionType": "ops.Broken"}})  # fmt: skip
    assert answer.status_code == 200, answer.text
    await wait_deliveries(client, uid, lambda d: d and d[0]["state"] == "delivered", 60)
    [(body, _)] = hooks_to(task_server, path)
    assert body["data"] == {"instance": "t#0", "task": "t", "exceptionType": "ops.Broken",
                            "exceptionInfo": ""}  # fmt: skip


def _log_since(stack: Stack, offset: int) -> str:
    with open(os.path.join(stack.env["TRIGGERS_DATA_DIR"], "worker.log"), "rb") as log:
        log.seek(offset)
        return log.read().decode(errors="replace")


async def test_deleting_a_session_under_a_running_task_is_dropped_quietly(
    stack: Stack, client: httpx.AsyncClient, task_server: TaskServer
) -> None:
    uid = new_uid()
    path = f"/slow/{uid}"
    started, release = threading.Event(), threading.Event()

    def slow(body: dict[str, Any], headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        started.set()
        release.wait(30)
        return 200, {"Content-Type": "application/json"}, b"{}"

    task_server.routes[path] = slow
    log_path = os.path.join(stack.env["TRIGGERS_DATA_DIR"], "worker.log")
    offset = os.path.getsize(log_path) if os.path.exists(log_path) else 0
    await client.put(f"/sessions/{uid}/config", json={
        "tasks": {"t": {"after": ["go"], "run": task_server.url(path)}}})  # fmt: skip
    await fire(client, uid, "go")
    assert await asyncio.to_thread(started.wait, 30)
    assert (await client.delete(f"/sessions/{uid}")).status_code == 204
    release.set()
    deadline = time.monotonic() + 30
    while "dropped" not in _log_since(stack, offset) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    await asyncio.sleep(1)  # anything logged right after the drop
    mine = [line for line in _log_since(stack, offset).splitlines() if uid in line]
    assert [line for line in mine if "dropped" in line and " INFO " in line], mine
    assert not [line for line in mine if "ERROR" in line or "Retries exceeded" in line], mine
    ours = [line for line in mine if " INFO " in line and " httpx " not in line]
    assert len(ours) == 1, mine  # one line (httpx's request lines are not the worker's)


async def test_a_subscription_secret_signs_its_deliveries(
    stack: Stack, client: httpx.AsyncClient, task_server: TaskServer
) -> None:
    uid = new_uid()
    own, shared = f"/tenant/{uid}", f"/shared/{uid}"
    for path in (own, shared):
        task_server.routes[path] = lambda body, headers: (204, {}, b"")
    answer = await client.put(f"/sessions/{uid}/config", json={
        "tasks": {"t": {"after": ["go"], "run": "echo", "using": "external"}},
        "webhooks": [
            {"url": task_server.url(own), "events": ["instanceFailed"], "secret": TENANT_SECRET},
            {"url": task_server.url(shared), "events": ["instanceFailed"]},
        ],
    })  # fmt: skip
    assert answer.status_code == 200, answer.text
    await fire(client, uid, "go")
    await client.post(f"/sessions/{uid}/instances/t%230/status", json={"status": "failed"})
    found = await wait_deliveries(
        client, uid, lambda d: len(d) == 2 and all(x["state"] == "delivered" for x in d), 60
    )
    assert TENANT_SECRET not in json.dumps(found)
    [(body, headers)] = hooks_to(task_server, own)
    raw = json.dumps(body, separators=(",", ":"))
    Webhook(TENANT_SECRET).verify(raw, headers)
    with pytest.raises(Exception):  # noqa: B017 - the service's secret does not verify it
        Webhook(secret(stack)).verify(raw, headers)
    [(body, headers)] = hooks_to(task_server, shared)
    Webhook(secret(stack)).verify(json.dumps(body, separators=(",", ":")), headers)


async def test_workers_started_in_different_folders_sign_alike(
    stack: Stack, client: httpx.AsyncClient, engine_e2e: Engine, task_server: TaskServer,
    tmp_path: Path,
) -> None:  # fmt: skip
    """Issue 8.7: each folder generated its own secret; receivers answered 401 for good."""
    path = f"/signed/{uuid.uuid4().hex[:8]}"
    task_server.routes[path] = ok({})
    tasks = {"t": {"after": ["go"], "run": task_server.url(path)}}

    async def run_one() -> tuple[dict[str, Any], dict[str, str]]:
        uid = new_uid()
        assert (await client.put(f"/sessions/{uid}/config", json={"tasks": tasks})).is_success
        await fire(client, uid, "go")
        await wait_for(engine_e2e, uid, lambda i: "t#0" in i and i["t#0"].resolved, 60)
        [call] = [(b, h) for b, h in hooks_to(task_server, path) if b["session"] == uid]
        return call

    await run_one()  # the first worker has its secret
    expected = secret(stack)
    stack.kill_workers()
    stack.env, original = {**stack.env, "TRIGGERS_DATA_DIR": str(tmp_path)}, stack.env
    try:
        stack.start_worker()
        body, headers = await run_one()
    finally:
        stack.kill_workers()
        stack.env = original
        stack.start_worker()
    Webhook(expected).verify(json.dumps(body, separators=(",", ":")), headers)
    assert (tmp_path / "webhook-secret").read_text().strip() == expected
