"""The client against a real service, through the plugin's fixtures, as a user's suite would."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from triggers_client import (
    PROBLEM_CLASSES,
    AsyncClient,
    Client,
    Config,
    Delivery,
    FireResult,
    Instance,
    InvalidWebhook,
    NotFound,
    ReplayResult,
    RetryPolicy,
    Session,
    TriggersConnectionError,
    UnresolvedInstance,
    UnresolvedTask,
    ValidationFailed,
    WaitTimeout,
    WebhookEvent,
    verify_webhook,
)
from triggers_client.testing import EmbeddedService, TaskEndpoint, WebhookReceiver, free_port

OPENAPI = Path(__file__).resolve().parents[3] / "openapi.json"


def questionnaire(run: str) -> dict[str, Any]:
    return {
        "tasks": {
            "t_compare": {"after": ["flora_page3", "fauna_page6"], "unless": ["withdrawn"],
                          "run": run},
        }
    }  # fmt: skip


def test_configure_fire_and_wait(triggers: Client, task_endpoint: TaskEndpoint) -> None:
    task_endpoint.answer("/compare", 200, {"same": True})
    config = triggers.configure("applicant:1", questionnaire(task_endpoint.url("/compare")))
    assert config.tasks["t_compare"].after == ["flora_page3", "fauna_page6"]

    fired = triggers.fire("applicant:1", "flora_page3", {"responses": {"q1": "yes"}})
    assert fired.uid == triggers.uid("applicant:1") and fired.scheduled == []
    waiting = triggers.unresolved("applicant:1")
    assert [(t.name, t.waitingFor) for t in waiting] == [("t_compare", ["fauna_page6"])]

    triggers.fire("applicant:1", "fauna_page6", {"page": 6})
    session = triggers.wait_finalized("applicant:1", timeout=60)
    instance = triggers.instance("applicant:1", "t_compare#0")  # sent as t_compare%230
    assert instance.status == "finished" and instance.result == {"same": True}
    assert session.instances["t_compare#0"].result == {"same": True}
    call = task_endpoint.calls("/compare")[0]
    assert call.verified, "HTTP tasks are signed with the service's secret"
    assert call.json()["kwargs"]["flora_page3"] == {"responses": {"q1": "yes"}}


def test_problems_are_typed_exceptions(triggers: Client) -> None:
    with pytest.raises(NotFound) as missing:
        triggers.session("never-configured")
    assert missing.value.status == 404 and missing.value.type == "/problems/not-found"

    with pytest.raises(ValidationFailed) as invalid:
        triggers.configure("bad", {"tasks": {"t": {"after": ["a"], "run": "ftp://x"}}})
    assert any(e.field.startswith("body.tasks.t") for e in invalid.value.errors)

    triggers.fire("s", "go")
    with pytest.raises(NotFound):
        triggers.replay("s", "nope#0")


def test_failed_instance_replayed_with_new_kwargs(
    triggers: Client, task_endpoint: TaskEndpoint
) -> None:
    task_endpoint.answer("/t", 500, {"error": "boom"}, times=1)
    task_endpoint.answer("/t", 200, {"ok": True})
    triggers.configure("r", {"tasks": {"t": {"after": ["go"], "run": task_endpoint.url("/t")}}})
    triggers.fire("r", "go", {"n": 1})
    failed = _wait_status(triggers, "r", "t#0", "failed")
    assert failed.metadata["exceptionType"]
    replay = triggers.replay("r", "t#0", {"go": {"n": 2}})
    assert replay == ReplayResult(replayed="t#0", instance="t#1")
    triggers.wait_finalized("r", timeout=60)
    assert task_endpoint.calls("/t")[-1].json()["kwargs"]["go"] == {"n": 2}
    statuses = {i.name: i.status for i in triggers.instances("r")}
    assert statuses == {"t#0": "replayed", "t#1": "finished"}
    assert [i.name for i in triggers.instances("r", status="finished")] == ["t#1"]


def test_external_runner_reports_status(triggers: Client) -> None:
    triggers.configure("x", {"tasks": {"t_ext": {"after": ["go"], "run": "ext.job",
                                                 "using": "external"}}})  # fmt: skip
    fired = triggers.fire("x", "go")
    assert fired.scheduled == ["t_ext#0"]
    assert [i.name for i in triggers.unresolved_instances("x")] == ["t_ext#0"]
    done = triggers.set_status("x", "t_ext#0", "finished", metadata={"result": {"k": 1}},
                               cascade=True)  # fmt: skip
    assert done.status == "finished"
    assert triggers.wait_finalized("x", timeout=30).finalized


def test_skip_and_delete(triggers: Client, task_endpoint: TaskEndpoint) -> None:
    task_endpoint.answer("/fails", 500)
    triggers.configure("k", {"tasks": {"t": {"after": ["go"], "run": task_endpoint.url("/fails")}}})
    triggers.fire("k", "go")
    _wait_status(triggers, "k", "t#0", "failed")
    skipped = triggers.skip("k", "t#0", cascade=True, result={"manual": True})
    assert skipped.status == "skipped"
    triggers.delete("k")
    with pytest.raises(NotFound):
        triggers.session("k")


def test_events_by_polling(triggers: Client, task_endpoint: TaskEndpoint) -> None:
    triggers.configure("e", {"tasks": {"t": {"after": ["go"], "run": task_endpoint.url("/e")}}})
    triggers.fire("e", "go", {"a": 1})
    kinds = [event.event for event in triggers.poll_events("e", poll_interval=0.1, timeout=60)]
    assert kinds[0] == "fired" and kinds[-1] == "finalized"
    assert "instanceFinished" in kinds


def test_events_from_the_stream_in_order_and_resumable(
    triggers: Client, task_endpoint: TaskEndpoint
) -> None:
    triggers.configure("s", {"tasks": {"t": {"after": ["go"], "run": task_endpoint.url("/s")}}})
    triggers.fire("s", "go", {"a": 1})
    events = list(triggers.events("s", timeout=60))
    kinds = [event.event for event in events]
    assert kinds[-1] == "finalized" and kinds.count("finalized") == 1
    assert kinds.index("fired") < kinds.index("scheduled") < kinds.index("finished"), kinds
    assert all(event.id for event in events)
    fired = next(event for event in events if event.event == "fired")
    assert fired.data["trigger"] == "go"
    # Resuming after an event id yields only what came after it.
    after = list(triggers.events("s", since=fired.id, timeout=60))
    assert [e.event for e in after] == kinds[len(kinds) - len(after) :]
    assert after and all(event.id != fired.id for event in after)


def test_async_events_from_the_stream(
    triggers_service: EmbeddedService, task_endpoint: TaskEndpoint
) -> None:
    async def scenario() -> list[str]:
        async with AsyncClient(triggers_service.url, namespace="async-events:") as client:
            await client.configure(
                "e", {"tasks": {"t": {"after": ["go"], "run": task_endpoint.url("/ae")}}}
            )
            await client.fire("e", "go")
            return [event.event async for event in client.events("e", timeout=60)]

    kinds = asyncio.run(scenario())
    assert kinds[-1] == "finalized" and "finished" in kinds, kinds


def test_events_time_out_on_a_session_that_never_ends(triggers: Client) -> None:
    triggers.configure("w", {"tasks": {"t": {"after": ["never"], "run": "http://127.0.0.1:9/x"}}})
    triggers.fire("w", "other")
    with pytest.raises(WaitTimeout):
        list(triggers.events("w", timeout=2))


def test_webhook_signed_and_verified(
    triggers: Client, task_endpoint: TaskEndpoint, webhook_receiver: WebhookReceiver,
    triggers_service: EmbeddedService,
) -> None:  # fmt: skip
    config = questionnaire(task_endpoint.url("/compare"))
    config["webhooks"] = [{"url": webhook_receiver.url, "events": ["sessionFinalized"]}]
    triggers.configure("w", config)
    triggers.fire("w", "flora_page3")
    triggers.fire("w", "fauna_page6")
    event = webhook_receiver.wait_for_event("sessionFinalized", session=triggers.uid("w"))
    assert event.data["finalizedAt"]

    delivery = next(r for r in webhook_receiver.requests if r.verified)
    secret = triggers_service.webhook_secret
    assert verify_webhook(delivery.headers, delivery.body, secret) == event
    with pytest.raises(InvalidWebhook):
        verify_webhook(delivery.headers, delivery.body.replace(b"}", b" }", 1), secret)

    webhook_id = delivery.headers["webhook-id"]
    recorded = triggers.deliveries("w")
    assert [d.id for d in recorded] == [webhook_id] and recorded[0].type == "sessionFinalized"
    triggers.redeliver("w", webhook_id)
    webhook_receiver.wait_for(lambda r: r.headers["webhook-id"] == webhook_id, count=2)


def test_fastapi_dependency_parses_a_real_delivery(
    triggers: Client, webhook_receiver: WebhookReceiver, triggers_service: EmbeddedService,
) -> None:  # fmt: skip
    from fastapi import Depends, FastAPI
    from triggers_client.webhooks import webhook_dependency

    app = FastAPI()
    received: list[WebhookEvent] = []
    finalized = Depends(webhook_dependency(triggers_service.webhook_secret))

    @app.post("/hook", status_code=204)
    async def hook(event: WebhookEvent = finalized) -> None:
        received.append(event)

    external = {"t": {"after": ["go"], "run": "ext", "using": "external"}}
    webhooks = [{"url": webhook_receiver.url, "events": ["*"]}]
    triggers.configure("d", {"tasks": external, "webhooks": webhooks})
    triggers.fire("d", "go")
    triggers.set_status("d", "t#0", "finished", cascade=True)
    webhook_receiver.wait_for_event("sessionFinalized", session=triggers.uid("d"))
    delivery = next(r for r in webhook_receiver.requests if r.verified)

    async def post(body: bytes) -> int:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as http:
            return (await http.post("/hook", content=body, headers=delivery.headers)).status_code

    assert asyncio.run(post(delivery.body)) == 204
    assert received[0].type == "sessionFinalized" and received[0].session == triggers.uid("d")
    assert asyncio.run(post(delivery.body + b" ")) == 401


def test_async_client(triggers_service: EmbeddedService, task_endpoint: TaskEndpoint) -> None:
    async def scenario() -> tuple[FireResult, Session, list[Instance]]:
        async with AsyncClient(triggers_service.url, namespace="async-test:") as client:
            await client.replace_config("a", questionnaire(task_endpoint.url("/a")))
            await client.fire("a", "flora_page3")
            fired = await client.fire("a", "fauna_page6")
            session = await client.wait_finalized("a", timeout=60)
            instances = [i async for i in client.instances("a")]
            await client.delete("a")
            return fired, session, instances

    fired, session, instances = asyncio.run(scenario())
    assert fired.scheduled == ["t_compare#0"]
    assert session.uid == "async-test:a" and session.finalized
    assert [i.name for i in instances] == ["t_compare#0"]


class LostAnswerProxy:
    """A loopback proxy to the service that forwards each request but answers the FIRST one
    with 503 (Retry-After: 0), as if the answer was lost: the client must retry with the same
    Idempotency-Key, and the service must do the work once."""

    def __init__(self, target: str) -> None:
        self.keys: list[str | None] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def _forward(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                proxy.keys.append(self.headers.get("idempotency-key"))
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                answer = httpx.request(self.command, target + self.path, content=body,
                                       headers=headers)  # fmt: skip
                if len(proxy.keys) == 1:
                    self.send_response(503)
                    self.send_header("Retry-After", "0")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(answer.status_code)
                self.send_header("Content-Type", answer.headers.get("content-type", ""))
                self.send_header("Content-Length", str(len(answer.content)))
                self.end_headers()
                self.wfile.write(answer.content)

            do_POST = do_GET = do_PATCH = _forward

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def lost_answer_proxy(triggers_service: EmbeddedService) -> Iterator[LostAnswerProxy]:
    proxy = LostAnswerProxy(triggers_service.url)
    yield proxy
    proxy.close()


def test_fire_retried_with_the_same_idempotency_key(
    triggers: Client, lost_answer_proxy: LostAnswerProxy
) -> None:
    triggers.configure("i", {"tasks": {"t": {"after": [], "andEvery": "page", "run": "ext",
                                             "using": "external"}}})  # fmt: skip
    with Client(lost_answer_proxy.url, namespace=triggers.calls.namespace) as via_proxy:
        fired = via_proxy.fire("i", "page", {"n": 1})
    assert (
        len(lost_answer_proxy.keys) == 2 and lost_answer_proxy.keys[0] == lost_answer_proxy.keys[1]
    )
    assert fired.scheduled == ["t#0"]
    assert list(triggers.session("i").instances) == ["t#0"], "the fire was recorded once"


def test_connection_errors_retried_then_raised() -> None:
    policy = RetryPolicy(attempts=3, backoff=0.01)
    client = Client(f"http://127.0.0.1:{free_port()}", retry=policy)
    with client, pytest.raises(TriggersConnectionError):
        client.session("s")


def test_url_and_key_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, triggers_service: EmbeddedService
) -> None:
    monkeypatch.setenv("TRIGGERS_URL", triggers_service.url)
    monkeypatch.setenv("TRIGGERS_API_KEY", "trg_example")
    with Client() as client:
        assert client.base_url == triggers_service.url
        assert client.http.headers["authorization"] == "Bearer trg_example"
        client.fire("env-test", "go")  # auth is off: the key is sent and ignored


def test_models_and_problem_classes_match_openapi() -> None:
    document = json.loads(OPENAPI.read_text())
    schemas = document["components"]["schemas"]
    mirrors = {
        Config: "ConfigBody", FireResult: "FireAnswer", Instance: "Instance",
        Session: "SessionAnswer", UnresolvedTask: "UnresolvedTaskView", Delivery: "Delivery",
        UnresolvedInstance: "UnresolvedInstanceView", ReplayResult: "ReplayAnswer",
    }  # fmt: skip
    for model, name in mirrors.items():
        properties = set(schemas[name]["properties"])
        fields = set(model.model_fields)
        assert fields <= properties, (
            f"{model.__name__} has fields {name} lacks: {fields - properties}"
        )
        required = set(schemas[name].get("required", []))
        assert required <= fields, f"{model.__name__} misses {required - fields} of {name}"
    assert set(PROBLEM_CLASSES) == set(document["components"]["examples"])


def _wait_status(client: Client, uid: str, name: str, status: str) -> Instance:
    import time

    deadline = time.monotonic() + 60
    while True:
        instance = client.instance(uid, name)
        if instance.status == status:
            return instance
        assert time.monotonic() < deadline, f"{name} is {instance.status}, not {status}"
        time.sleep(0.2)
