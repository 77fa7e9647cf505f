"""Tasks really run: real worker processes, the Redis broker, HTTP tasks on loopback."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from standardwebhooks.webhooks import Webhook

from service.engine import Engine
from tests.e2e.conftest import Stack, TaskServer, all_resolved, new_uid, wait_for


def ok(result: dict[str, Any]) -> Any:
    return lambda body, headers: (200, {"Content-Type": "application/json"},
                                  json.dumps(result).encode())  # fmt: skip


async def configure(client: httpx.AsyncClient, uid: str, tasks: dict[str, Any]) -> None:
    answer = await client.put(f"/sessions/{uid}/config", json={"tasks": tasks})
    assert answer.status_code == 200, answer.text


async def fire(client: httpx.AsyncClient, uid: str, trigger: str, **kwargs: Any) -> Any:
    answer = await client.post(f"/sessions/{uid}/fire", json={"trigger": trigger, "kwargs": kwargs})
    assert answer.status_code == 200, answer.text
    return answer.json()


async def test_cascade_chain_through_python_and_http_tasks(
    stack: Stack, client: httpx.AsyncClient, engine_e2e: Engine, task_server: TaskServer
) -> None:
    uid = new_uid()
    task_server.routes["/compare"] = ok({"same": True})
    await configure(client, uid, {
        "t_import": {"after": ["submitted"], "run": "echo"},
        "t_compare": {"after": ["t_import"], "run": task_server.url("/compare"),
                      "withParams": {"cfg": {"strict": True}}},
        "t_report": {"after": ["t_compare"], "run": "echo"},
    })  # fmt: skip
    await fire(client, uid, "submitted", applicant=7)
    instances = await wait_for(engine_e2e, uid, lambda i: len(i) == 3 and all_resolved(i))
    assert {n: i.status for n, i in instances.items()} == {
        "t_import#0": "finished", "t_compare#0": "finished", "t_report#0": "finished"
    }  # fmt: skip
    assert instances["t_report#0"].metadata["actualKwargs"] == {"t_compare": {"same": True}}
    [body] = [b for b in task_server.calls_to("/compare") if b["session"] == uid]
    assert body == {
        "session": uid, "instance": "t_compare#0", "task": "t_compare", "attempt": 1,
        "kwargs": {"t_import": {"kwargs": {"submitted": {"applicant": 7}}, "attempt": 1},
                   "cfg": {"strict": True}},
    }  # fmt: skip
    _, raw_body, headers, _ = next(c for c in task_server.calls if c[1] == body)
    session_id = (await engine_e2e.snapshot(uid)).sessionId
    assert headers["idempotency-key"] == f"{uid}/t_compare#0/{session_id}"
    secret = (Path(stack.env["TRIGGERS_DATA_DIR"]) / "webhook-secret").read_text().strip()
    Webhook(secret).verify(json.dumps(raw_body, separators=(",", ":")), headers)


async def test_and_every_with_many_pages(client: httpx.AsyncClient, engine_e2e: Engine) -> None:
    uid = new_uid()
    await configure(client, uid, {
        "t_page": {"after": [], "andEvery": "pageReceived", "run": "validated_page"}
    })  # fmt: skip
    for page in range(15):
        await fire(client, uid, "pageReceived", page=page)
    instances = await wait_for(engine_e2e, uid, lambda i: len(i) == 15 and all_resolved(i))
    assert sorted(i.metadata["result"]["page"] for i in instances.values()) == list(range(15))


async def test_unless_abandons_before_anything_runs(
    client: httpx.AsyncClient, engine_e2e: Engine
) -> None:
    uid = new_uid()
    await configure(client, uid, {"t": {"after": ["a", "b"], "unless": ["withdrawn"],
                                        "run": "echo"}})  # fmt: skip
    await fire(client, uid, "a")
    answer = await fire(client, uid, "withdrawn")
    assert answer["abandoned"] == ["t#0"]
    await fire(client, uid, "b")
    assert (await engine_e2e.instance(uid, "t#0")).status == "abandoned"


async def test_http_outcomes(
    client: httpx.AsyncClient, engine_e2e: Engine, task_server: TaskServer
) -> None:
    uid = new_uid()
    task_server.routes["/skip"] = lambda b, h: (200, {"Triggers-Outcome": "skip"}, b'{"why":"no"}')
    task_server.routes["/list"] = lambda b, h: (200, {}, b"[1,2]")
    task_server.routes["/500"] = lambda b, h: (500, {}, b"kaput")
    task_server.routes["/empty"] = lambda b, h: (204, {}, b"")
    closed_port = task_server.port + 1 if task_server.port < 65535 else 1
    await configure(client, uid, {
        "t_skip": {"after": ["go"], "run": task_server.url("/skip")},
        "t_list": {"after": ["go"], "run": task_server.url("/list")},
        "t_500": {"after": ["go"], "run": task_server.url("/500")},
        "t_empty": {"after": ["go"], "run": task_server.url("/empty")},
        "t_refused": {"after": ["go"], "run": f"http://127.0.0.1:{closed_port}/x",
                      "connectTimeout": 2},
        "t_private": {"after": ["go"], "run": f"http://127.0.0.2:{task_server.port}/skip"},
    })  # fmt: skip
    await fire(client, uid, "go")
    instances = await wait_for(
        engine_e2e, uid,
        lambda i: len(i) == 6 and all(x.status not in ("scheduled", "running") for x in i.values()),
    )  # fmt: skip
    status = {n: i.status for n, i in instances.items()}
    assert status == {"t_skip#0": "skipped", "t_list#0": "failed", "t_500#0": "failed",
                      "t_empty#0": "finished", "t_refused#0": "failed",
                      "t_private#0": "failed"}  # fmt: skip
    meta = {n: i.metadata for n, i in instances.items()}
    assert meta["t_skip#0"]["why"] == "no"
    assert meta["t_list#0"]["exceptionType"] == "triggers.InvalidTaskResult"
    assert meta["t_500#0"]["exceptionContext"] == {"status": 500, "body": "kaput"}
    assert meta["t_empty#0"]["result"] == {}
    assert meta["t_refused#0"]["exceptionType"] == "httpx.ConnectError"
    assert meta["t_private#0"]["exceptionType"] == "triggers.OutboundRefused"
    assert not [c for c in task_server.calls if c[1].get("instance") == "t_private#0"
                and c[1].get("session") == uid]  # fmt: skip


async def test_http_retry_with_cooldown_ends_replayed_replayed_failed(
    client: httpx.AsyncClient, engine_e2e: Engine, task_server: TaskServer
) -> None:
    uid = new_uid()
    task_server.routes["/busy"] = lambda b, h: (503, {"Retry-After": "1"}, b"")
    await configure(client, uid, {"t": {"after": ["go"], "run": task_server.url("/busy"),
                                        "maxRetries": 2}})  # fmt: skip
    await fire(client, uid, "go")
    instances = await wait_for(engine_e2e, uid, lambda i: i.get("t#2") is not None
                               and i["t#2"].status == "failed")  # fmt: skip
    assert [instances[f"t#{n}"].status for n in range(3)] == ["replayed", "replayed", "failed"]
    assert instances["t#2"].metadata["exceptionType"] == "triggers.MaxRetriesExceeded"
    times = sorted(t for _, body, _, t in task_server.calls if body.get("session") == uid)
    assert len(times) == 3  # one request per instance: no duplicate execution
    assert times[1] - times[0] >= 0.95 and times[2] - times[1] >= 0.95  # cooldown respected


async def test_replay_with_replacement_kwargs_and_skip_with_cascade(
    client: httpx.AsyncClient, engine_e2e: Engine
) -> None:
    uid = new_uid()
    await configure(client, uid, {"t_fail": {"after": ["go"], "run": "boom"},
                                  "t_next": {"after": ["t_fail"], "run": "echo"},
                                  "t_again": {"after": ["go2"], "run": "boom"}})  # fmt: skip
    await fire(client, uid, "go", a=1)
    await fire(client, uid, "go2")
    await wait_for(engine_e2e, uid, lambda i: len(i) == 2
                   and all(x.status == "failed" for x in i.values()))  # fmt: skip
    failed = await engine_e2e.instance(uid, "t_fail#0")
    assert failed.metadata["exceptionContext"] == {"where": "tests"}
    assert failed.metadata["exceptionType"] == "service.worker.python_tasks.TaskError"
    await configure(client, uid, {"t_fail": {"after": ["go"], "run": "echo"},
                                  "t_next": {"after": ["t_fail"], "run": "echo"},
                                  "t_again": {"after": ["go2"], "run": "boom"}})  # fmt: skip
    replay = await client.post(f"/sessions/{uid}/instances/t_fail%230/replay",
                               json={"kwargs": {"go": {"b": 2}}})  # fmt: skip
    assert replay.json() == {"replayed": "t_fail#0", "instance": "t_fail#1"}
    skipped = await client.post(f"/sessions/{uid}/instances/t_again%230/skip",
                                json={"cascade": True, "result": {"r": 1}})  # fmt: skip
    assert skipped.json()["status"] == "skipped"
    instances = await wait_for(engine_e2e, uid, lambda i: "t_next#0" in i
                               and i["t_next#0"].status == "finished")  # fmt: skip
    assert instances["t_fail#1"].metadata["actualKwargs"] == {"go": {"b": 2}}
    assert instances["t_next#0"].metadata["actualKwargs"]["t_fail"]["kwargs"] == {"go": {"b": 2}}


async def test_python_task_outcomes(client: httpx.AsyncClient, engine_e2e: Engine) -> None:
    uid = new_uid()
    await configure(client, uid, {
        "t_retry": {"after": ["go"], "run": "retry_until_depth",
                    "withParams": {"retries": {"times": 2}}},
        "t_skip": {"after": ["go"], "run": "self_skip"},
        "t_warn": {"after": ["go"], "run": "warn_then_finish"},
        "t_unknown": {"after": ["go"], "run": "no_such_task"},
        "t_list": {"after": ["go"], "run": "not_an_object"},
        "t_fire": {"after": ["go"], "run": "fire_more"},
        "t_extra": {"after": ["extra"], "run": "echo"},
    })  # fmt: skip
    await fire(client, uid, "go")
    instances = await wait_for(engine_e2e, uid, lambda i: {"t_retry#2", "t_extra#0"} <= i.keys()
                               and all(x.status not in ("scheduled", "running", "unstarted")
                                       for x in i.values()))  # fmt: skip
    status = {n: i.status for n, i in instances.items()}
    assert status["t_retry#0"] == status["t_retry#1"] == "replayed"
    assert status["t_retry#2"] == "finished"
    assert instances["t_retry#2"].metadata["result"] == {"seen": 2}
    assert instances["t_retry#2"].metadata["parent"] == "t_retry#1"
    assert status["t_skip#0"] == "skipped" and instances["t_skip#0"].metadata["why"]
    assert status["t_warn#0"] == "finished" and instances["t_warn#0"].metadata["logLevel"] == 30
    assert instances["t_unknown#0"].metadata["exceptionType"] == "triggers.UnknownTask"
    assert instances["t_list#0"].metadata["exceptionType"] == "builtins.ValueError"
    assert instances["t_extra#0"].metadata["actualKwargs"] == {"extra": {"from": "t_fire#0"}}


async def test_external_runner_waits_for_a_status_report(
    client: httpx.AsyncClient, engine_e2e: Engine
) -> None:
    uid = new_uid()
    await configure(client, uid, {"t_ext": {"after": ["go"], "run": "anything",
                                            "using": "external"},
                                  "t_after": {"after": ["t_ext"], "run": "echo"}})  # fmt: skip
    await fire(client, uid, "go")
    time.sleep(1)
    assert (await engine_e2e.instance(uid, "t_ext#0")).status == "scheduled"
    report = await client.post(f"/sessions/{uid}/instances/t_ext%230/status",
                               json={"status": "finished", "cascade": True,
                                     "cascadeKwargs": {"done": 1}})  # fmt: skip
    assert report.status_code == 200
    instances = await wait_for(engine_e2e, uid, lambda i: "t_after#0" in i
                               and i["t_after#0"].status == "finished")  # fmt: skip
    assert instances["t_after#0"].metadata["actualKwargs"] == {"t_ext": {"done": 1}}


async def test_http_timeouts_and_the_response_cap(
    client: httpx.AsyncClient, engine_e2e: Engine, task_server: TaskServer
) -> None:
    uid = new_uid()

    def slow(body: dict[str, Any], headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        time.sleep(2)
        return 200, {}, b"{}"

    task_server.routes["/slow"] = slow
    task_server.routes["/huge"] = lambda b, h: (200, {}, b'{"x":"' + b"a" * 2_000_000 + b'"}')
    await configure(client, uid, {
        "t_slow": {"after": ["go"], "run": task_server.url("/slow"), "readTimeout": 0.5},
        "t_huge": {"after": ["go"], "run": task_server.url("/huge")},
    })  # fmt: skip
    await fire(client, uid, "go")
    instances = await wait_for(engine_e2e, uid, lambda i: len(i) == 2
                               and all(x.status == "failed" for x in i.values()))  # fmt: skip
    assert instances["t_slow#0"].metadata["exceptionType"] == "httpx.ReadTimeout"
    assert instances["t_huge#0"].metadata["exceptionType"] == "triggers.ResponseTooLarge"


async def test_the_namespaced_super_session_recipe(
    client: httpx.AsyncClient, engine_e2e: Engine
) -> None:
    """L2: two questionnaires of one applicant feed ``applicant:<id>``; pages arrive in either
    order from separate requests; t_compareResponses runs once with both kwargs."""
    applicant = f"applicant:{uuid.uuid4().hex[:8]}"
    flora, fauna = f"flora-{applicant[10:]}", f"fauna-{applicant[10:]}"
    await configure(client, applicant, {
        "t_compareResponses": {"after": ["flora_page3", "fauna_page6"], "run": "echo"},
    })  # fmt: skip
    for questionnaire, trigger, page in ((fauna, "fauna_page6", 6), (flora, "flora_page3", 3)):
        await fire(client, questionnaire, f"page{page}", responses={"q": page})
        await fire(client, applicant, trigger, responses={"q": page})
    instances = await wait_for(engine_e2e, applicant, lambda i: all_resolved(i))
    assert list(instances) == ["t_compareResponses#0"]
    assert instances["t_compareResponses#0"].metadata["actualKwargs"] == {
        "flora_page3": {"responses": {"q": 3}}, "fauna_page6": {"responses": {"q": 6}}
    }  # fmt: skip


async def test_http_retry_by_429_and_by_header_with_replacement_kwargs(
    client: httpx.AsyncClient, engine_e2e: Engine, task_server: TaskServer
) -> None:
    uid = new_uid()
    first_429 = iter([(429, {}, b""), (200, {}, b'{"ok":1}')])
    first_header = iter([
        (200, {"Triggers-Outcome": "retry"}, b'{"kwargs": {"go": {"fixed": true}}}'),
        (200, {}, b'{"ok":2}'),
    ])  # fmt: skip
    task_server.routes["/r429"] = lambda body, headers: next(first_429)
    task_server.routes["/rhdr"] = lambda body, headers: next(first_header)
    await configure(client, uid, {
        "t_429": {"after": ["go"], "run": task_server.url("/r429")},
        "t_hdr": {"after": ["go"], "run": task_server.url("/rhdr")},
    })  # fmt: skip
    await fire(client, uid, "go", original=True)

    def done(i: dict[str, Any]) -> bool:
        return {"t_429#1", "t_hdr#1"} <= i.keys() and all(
            i[name].status == "finished" for name in ("t_429#1", "t_hdr#1")
        )

    instances = await wait_for(engine_e2e, uid, done)
    assert instances["t_429#0"].status == instances["t_hdr#0"].status == "replayed"
    assert instances["t_429#1"].kwargs == {"go": {"original": True}}
    assert instances["t_hdr#1"].kwargs == {"go": {"fixed": True}}  # the body's replacement
    [retried] = [b for b in task_server.calls_to("/rhdr") if b["session"] == uid][1:]
    assert retried["kwargs"] == {"go": {"fixed": True}} and retried["attempt"] == 1
