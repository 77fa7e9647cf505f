"""Webhooks end to end: one signed sessionFinalized per session, retried until taken."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
from standardwebhooks.webhooks import Webhook

from service.engine import Engine
from tests.e2e.conftest import Stack, TaskServer, new_uid, wait_for
from tests.e2e.test_execution import configure, fire


def secret(stack: Stack) -> str:
    return (Path(stack.env["TRIGGERS_DATA_DIR"]) / "webhook-secret").read_text().strip()


def hooks_to(task_server: TaskServer, path: str) -> list[tuple[dict[str, Any], dict[str, str]]]:
    return [(body, headers) for p, body, headers, _ in task_server.calls if p == path]


async def deliveries(client: httpx.AsyncClient, uid: str) -> list[dict[str, Any]]:
    answer = await client.get(f"/sessions/{uid}/webhooks/deliveries")
    assert answer.status_code == 200, answer.text
    return list(answer.json()["deliveries"])


async def wait_deliveries(
    client: httpx.AsyncClient, uid: str, done: Any, timeout: float = 20
) -> list[dict[str, Any]]:
    import asyncio
    import time

    deadline = time.monotonic() + timeout
    found: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        found = await deliveries(client, uid)
        if done(found):
            return found
        await asyncio.sleep(0.1)
    raise AssertionError(f"deliveries: {found}")


async def test_one_signed_session_finalized_per_session(
    stack: Stack, client: httpx.AsyncClient, engine_e2e: Engine, task_server: TaskServer
) -> None:
    uid = new_uid()
    path = f"/hook/{uid}"
    task_server.routes[path] = lambda body, headers: (204, {}, b"")
    await client.put(f"/sessions/{uid}/config", json={
        "tasks": {"t_a": {"after": ["start"], "run": "echo"},
                  "t_b": {"after": ["t_a"], "run": "echo"},
                  "t_fin": {"after": ["sessionFinalized"], "run": "echo"}},
        "webhooks": [{"url": task_server.url(path), "events": ["sessionFinalized"]}],
    })  # fmt: skip
    await fire(client, uid, "start")
    found = await wait_deliveries(client, uid, lambda d: d and d[0]["state"] == "delivered")
    instances = await wait_for(engine_e2e, uid, lambda i: "t_fin#0" in i
                               and i["t_fin#0"].status == "finished")  # fmt: skip
    assert instances["t_fin#0"].metadata["actualKwargs"] == {"sessionFinalized": {}}
    await fire(client, uid, "start")  # more fires after finalization: no second event
    [(body, headers)] = hooks_to(task_server, path)
    assert body["type"] == "sessionFinalized" and body["session"] == uid
    assert body["data"]["finalizedAt"]
    Webhook(secret(stack)).verify(json.dumps(body, separators=(",", ":")), headers)
    assert [d["type"] for d in found] == ["sessionFinalized"]
    assert headers["webhook-id"] == found[0]["id"]
    assert (await client.delete(f"/sessions/{uid}")).status_code == 204
    leftovers = await engine_e2e.client.keys(f"{stack.prefix}:{{{uid}}}:*")
    assert leftovers == []  # the delivery log went with the session


async def test_a_failing_receiver_gets_the_same_event_again_until_it_takes_it(
    client: httpx.AsyncClient, task_server: TaskServer
) -> None:
    uid = new_uid()
    path = f"/flaky/{uid}"
    answers = iter([(500, {}, b"down"), (503, {"Retry-After": "1"}, b""), (200, {}, b"{}")])
    task_server.routes[path] = lambda body, headers: next(answers)
    await configure(client, uid, {"t": {"after": ["go"], "run": "echo"}})
    await client.patch(f"/sessions/{uid}/config", json={
        "tasks": {"t": {"after": ["go"], "run": "echo"}},
        "webhooks": [{"url": task_server.url(path), "events": ["*"]}],
    })  # fmt: skip
    await fire(client, uid, "go")
    [delivery] = await wait_deliveries(client, uid, lambda d: d and d[0]["state"] == "delivered")
    assert [a["status"] for a in delivery["attempts"]] == [500, 503, 200]
    calls = hooks_to(task_server, path)
    assert len({headers["webhook-id"] for _, headers in calls}) == 1  # same id every time
    assert len({json.dumps(body, sort_keys=True) for body, _ in calls}) == 1  # same body
    third, second = delivery["attempts"][2]["at"], delivery["attempts"][1]["at"]
    assert third - second >= 950  # Retry-After: 1 honoured

    # The receiver takes it before the redelivery is asked for: a worker may attempt it at once
    # (RabbitMQ pushes the message), before this test's next line.
    task_server.routes[path] = lambda body, headers: (200, {}, b"{}")
    answer = await client.post(f"/sessions/{uid}/webhooks/deliveries/{delivery['id']}/redeliver")
    assert answer.status_code == 202
    [again] = await wait_deliveries(client, uid, lambda d: len(d[0]["attempts"]) == 4
                                    and d[0]["state"] == "delivered")  # fmt: skip
    assert len(hooks_to(task_server, path)) == 4 and again["id"] == delivery["id"]
    missing = await client.post(f"/sessions/{uid}/webhooks/deliveries/msg_{'0' * 32}/redeliver")
    assert missing.status_code == 404


async def test_instance_failed_events_and_gone_receivers(
    client: httpx.AsyncClient, task_server: TaskServer
) -> None:
    uid = new_uid()
    path = f"/gone/{uid}"
    task_server.routes[path] = lambda body, headers: (410, {}, b"")
    await client.put(f"/sessions/{uid}/config", json={
        "tasks": {"t": {"after": ["go"], "run": "boom"}},
        "webhooks": [{"url": task_server.url(path), "events": ["instanceFailed"]}],
    })  # fmt: skip
    await fire(client, uid, "go")
    [delivery] = await wait_deliveries(client, uid, lambda d: d and d[0]["state"] == "failed")
    assert delivery["type"] == "instanceFailed" and len(delivery["attempts"]) == 1  # 410: stop
    [(body, _)] = hooks_to(task_server, path)
    assert body["data"]["instance"] == "t#0"
    assert body["data"]["exceptionType"] == "service.worker.python_tasks.TaskError"


async def test_a_url_off_the_allow_list_is_never_called(
    client: httpx.AsyncClient, task_server: TaskServer
) -> None:
    uid = new_uid()
    path = f"/private/{uid}"
    task_server.routes[path] = lambda body, headers: (200, {}, b"{}")
    private = f"http://127.0.0.2:{task_server.port}{path}"  # loopback, not allow-listed
    await client.put(f"/sessions/{uid}/config", json={
        "tasks": {"t": {"after": ["go"], "run": "echo"}},
        "webhooks": [{"url": private, "events": ["sessionFinalized"]}],
    })  # fmt: skip
    await fire(client, uid, "go")
    [delivery] = await wait_deliveries(client, uid, lambda d: d and d[0]["state"] == "failed")
    assert delivery["attempts"][0]["error"].startswith("OutboundRefused")
    assert hooks_to(task_server, path) == []
