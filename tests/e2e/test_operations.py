"""What operators see, on a stack of its own (so the figures are this test's alone): the API's
and a worker process's /metrics after a real workload, worker heartbeats and what they drive
(readyz, /healthz/workers, `triggers worker --check`, the unresolved reason), and draining."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis

from service.engine import Engine
from service.redis_server import free_port
from tests.e2e.conftest import (
    TaskServer,
    all_resolved,
    new_uid,
    stack_env,
    start_api,
    stop,
    wait_for,
)
from tests.e2e.test_execution import configure, fire, ok

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@dataclass
class OpsStack:
    api_url: str
    env: dict[str, str]
    metrics_port: int
    api: subprocess.Popen[bytes]
    workers: list[subprocess.Popen[bytes]]

    def start_worker(self) -> subprocess.Popen[bytes]:
        process = subprocess.Popen(
            [sys.executable, "-m", "service.cli", "worker", "--processes", "1", "--threads", "4"],
            env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        self.workers.append(process)
        return process

    def stop_workers(self) -> None:
        for process in self.workers:
            stop(process)
        self.workers.clear()


@pytest.fixture(scope="module")
def ops(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpsStack]:
    env = stack_env(redis_url, f"ops-{uuid.uuid4().hex[:8]}", str(tmp_path_factory.mktemp("ops")))
    port = free_port()
    env.update({"TRIGGERS_METRICS_PORT": str(port), "TRIGGERS_HEARTBEAT_INTERVAL": "0.5"})
    api, url = start_api(env)
    stack = OpsStack(url, env, port, api, [])
    stack.start_worker()
    try:
        yield stack
    finally:
        stack.stop_workers()
        stop(api)


@pytest.fixture
async def ops_client(ops: OpsStack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=ops.api_url, timeout=10) as http:
        yield http


@pytest.fixture
async def ops_engine(ops: OpsStack, redis_url: str) -> AsyncIterator[Engine]:
    engine = Engine(Redis.from_url(redis_url, decode_responses=True),
                    prefix=ops.env["TRIGGERS_KEY_PREFIX"], finalize=False)  # fmt: skip
    yield engine
    await engine.aclose()


def parse(text: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def total(samples: Samples, name: str, **labels: str) -> float:
    """Sum over every series of ``name`` whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= ls)


async def scrape(url: str) -> tuple[str, Samples]:
    async with httpx.AsyncClient(timeout=10) as http:
        answer = await http.get(url)
    assert answer.status_code == 200, answer.text
    return answer.text, parse(answer.text)


async def eventually(check: Callable[[], Any], timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await check()
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


async def test_metrics_add_up_after_a_real_workload(
    ops: OpsStack, ops_client: httpx.AsyncClient, ops_engine: Engine, task_server: TaskServer
) -> None:
    worker_url = f"http://127.0.0.1:{ops.metrics_port}/metrics"
    hook = f"/ops-hook/{uuid.uuid4().hex[:6]}"
    task_server.routes["/ops-compare"] = ok({"same": True})
    task_server.routes[hook] = lambda body, headers: (204, {}, b"")
    uids = [new_uid() for _ in range(3)]
    for uid in uids:
        answer = await ops_client.put(f"/sessions/{uid}/config", json={
            "tasks": {"t_http": {"after": ["go"], "run": task_server.url("/ops-compare")},
                      "t_py": {"after": ["t_http"], "run": "echo"}},
            "webhooks": [{"url": task_server.url(hook), "events": ["sessionFinalized"]}],
        })  # fmt: skip
        assert answer.status_code == 200, answer.text
        await fire(ops_client, uid, "go")
    retrying = new_uid()
    await configure(ops_client, retrying, {"t_retry": {"after": ["retries"],
                                                       "run": "retry_until_depth"}})  # fmt: skip
    await fire(ops_client, retrying, "retries", times=1)
    for uid in [*uids, retrying]:
        await wait_for(ops_engine, uid, all_resolved, timeout=60)

    async def worker_figures() -> tuple[str, Samples]:
        text, found = await scrape(worker_url)
        delivered = value(found, "triggers_webhook_deliveries_total",
                          event="sessionFinalized", outcome="delivered")  # fmt: skip
        assert delivered == 3, delivered
        return text, found

    worker_text, worker = await eventually(worker_figures)
    api_text, api = await scrape(ops.api_url + "/metrics")

    # every instance counted once, by kind and outcome
    assert value(worker, "triggers_instances_total", task_kind="http", outcome="finished") == 3
    assert value(worker, "triggers_instances_total", task_kind="python", outcome="finished") == 4
    assert value(worker, "triggers_instances_total", task_kind="python", outcome="retried") == 1
    assert total(worker, "triggers_instances_total") == 8
    # histograms filled: a duration per run, a wait per first run (not the retry's clone)
    assert value(worker, "triggers_task_duration_seconds_count", task_kind="http") == 3
    assert value(worker, "triggers_task_duration_seconds_count", task_kind="python") == 5
    assert value(worker, "triggers_schedule_to_start_seconds_count") == 7
    assert value(worker, "triggers_webhook_attempt_duration_seconds_count") == 3
    assert value(worker, "triggers_leases_active") == 0
    assert total(worker, "triggers_lua_script_seconds_count", script="claim") >= 8
    # finalizations happen where the last change ran; fires through the API
    finalized = value(worker, "triggers_sessions_finalized_total") + value(
        api, "triggers_sessions_finalized_total"
    )
    assert finalized == 4
    assert value(api, "triggers_fires_total", outcome="scheduled") == 4
    assert value(api, "triggers_build_info", version=_version()) == 1
    fire_route = dict(method="POST", route="/sessions/{uid}/fire", status="200")
    assert value(api, "triggers_http_requests_total", **fire_route) == 4
    assert value(api, "triggers_http_request_duration_seconds_count", method="POST",
                 route="/sessions/{uid}/fire") == 4  # fmt: skip
    # deployment gauges, read at scrape time
    assert value(api, "triggers_workers_alive") == 1
    assert ("triggers_queue_messages", frozenset(
        {("queue", "triggers"), ("state", "dead-lettered")})) in api  # fmt: skip
    assert ("triggers_outbox_pending", frozenset()) in api
    # a session UID is never a label
    for uid in [*uids, retrying]:
        assert uid not in worker_text and uid not in api_text


async def test_an_external_workers_report_counts_its_instance(
    ops: OpsStack, ops_client: httpx.AsyncClient
) -> None:
    uid = new_uid()
    await configure(ops_client, uid, {"t_ext": {"after": ["go"], "run": "elsewhere",
                                                "using": "external"}})  # fmt: skip
    _, before = await scrape(ops.api_url + "/metrics")
    await fire(ops_client, uid, "go")
    reported = await ops_client.post(f"/sessions/{uid}/instances/t_ext%230/status",
                                     json={"status": "finished"})  # fmt: skip
    assert reported.status_code == 200, reported.text
    _, after = await scrape(ops.api_url + "/metrics")
    series = {"task_kind": "external", "outcome": "finished"}
    assert (
        value(after, "triggers_instances_total", **series)
        - value(before, "triggers_instances_total", **series)
        == 1
    )


def _version() -> str:
    from importlib.metadata import version

    return version("triggers-service")


async def test_metrics_need_the_metrics_scope(redis_url: str, tmp_path: Any) -> None:
    from service.api.auth import new_api_key

    reader, reader_key = new_api_key("reader", [], ["read"])
    scraper, scraper_key = new_api_key("prometheus", [], ["metrics"])
    env = stack_env(redis_url, f"ops-{uuid.uuid4().hex[:8]}", str(tmp_path))
    env["TRIGGERS_AUTH"] = "on"
    env["TRIGGERS_API_KEYS"] = (
        "[" + ",".join(k.model_dump_json() for k in (reader_key, scraper_key)) + "]"
    )
    api, url = start_api(env)
    try:
        async with httpx.AsyncClient(base_url=url, timeout=10) as http:
            assert (await http.get("/metrics")).status_code == 401
            as_reader = await http.get("/metrics", headers={"Authorization": f"Bearer {reader}"})
            assert as_reader.status_code == 403
            as_scraper = await http.get("/metrics",
                                        headers={"Authorization": f"Bearer {scraper}"})  # fmt: skip
            assert as_scraper.status_code == 200
            assert "triggers_fires_total" in as_scraper.text
            assert (await http.get("/livez")).status_code == 200
    finally:
        stop(api)


async def test_worker_liveness_shows_in_readyz_check_and_unresolved_reason(
    ops: OpsStack, ops_client: httpx.AsyncClient
) -> None:
    async def workers_alive(expected: int) -> None:
        ready = (await ops_client.get("/readyz")).json()
        assert ready["checks"]["workers"] == str(expected), ready
        answer = (await ops_client.get("/healthz/workers")).json()
        assert answer["checks"]["alive"] == str(expected), answer

    await eventually(lambda: workers_alive(1))
    assert check_worker(ops) == 0
    ops.stop_workers()  # a clean stop withdraws the heartbeat at once
    await eventually(lambda: workers_alive(0))
    assert check_worker(ops) == 1
    uid = new_uid()
    await configure(ops_client, uid, {"t_a": {"after": ["go"], "run": "echo"}})
    await fire(ops_client, uid, "go")
    [task] = (await ops_client.get(f"/sessions/{uid}/tasks/unresolved")).json()["tasks"]
    assert task["reason"].startswith("no worker alive"), task
    ops.start_worker()
    await eventually(lambda: workers_alive(1))


async def test_a_killed_worker_goes_stale(ops: OpsStack, ops_client: httpx.AsyncClient) -> None:
    async def alive(expected: str) -> None:
        ready = (await ops_client.get("/readyz")).json()
        assert ready["checks"]["workers"] == expected, ready

    if not ops.workers:
        ops.start_worker()
    await eventually(lambda: alive("1"))
    for process in ops.workers:
        os.killpg(process.pid, signal.SIGKILL)  # no chance to withdraw: the beat expires
        process.wait()
    ops.workers.clear()
    await eventually(lambda: alive("0"))
    assert check_worker(ops) == 1
    ops.start_worker()
    await eventually(lambda: alive("1"))


def check_worker(ops: OpsStack) -> int:
    return subprocess.run(
        [sys.executable, "-m", "service.cli", "worker", "--check", "--processes", "1"],
        env=ops.env, capture_output=True, timeout=60,
    ).returncode  # fmt: skip


async def test_readyz_turns_503_on_sigterm_before_the_server_stops(
    redis_url: str, tmp_path: Any
) -> None:
    env = stack_env(redis_url, f"ops-{uuid.uuid4().hex[:8]}", str(tmp_path))
    env["TRIGGERS_DRAIN_SECONDS"] = "3"
    api, url = start_api(env)
    try:
        async with httpx.AsyncClient(base_url=url, timeout=10) as http:
            assert (await http.get("/readyz")).status_code == 200
            api.send_signal(signal.SIGTERM)

            async def draining() -> None:
                answer = await http.get("/readyz")
                assert answer.status_code == 503 and answer.json()["status"] == "draining"

            await eventually(draining, timeout=10)
            assert (await http.get("/livez")).status_code == 200  # still serving
        api.wait(30)
        assert api.returncode == 0
    finally:
        stop(api)


@pytest.mark.timeout(180)
async def test_a_dead_workers_lease_is_counted_as_redispatched_and_the_run_once(
    ops: OpsStack, ops_client: httpx.AsyncClient, ops_engine: Engine
) -> None:
    uid = new_uid()
    await configure(ops_client, uid, {
        "t_slow": {"after": ["go"], "run": "slow", "withParams": {"cfg": {"seconds": 2}}},
    })  # fmt: skip
    if not ops.workers:
        ops.start_worker()
    await fire(ops_client, uid, "go")
    await wait_for(ops_engine, uid, lambda i: i["t_slow#0"].status == "running", timeout=60)
    for process in ops.workers:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    ops.workers.clear()
    ops.start_worker()  # a fresh process: its counters start at zero, on the same port
    done = await wait_for(ops_engine, uid, lambda i: i["t_slow#0"].status == "finished", 90)
    assert done["t_slow#0"].metadata["attempt"] == 2

    async def counted() -> Samples:
        _, found = await scrape(f"http://127.0.0.1:{ops.metrics_port}/metrics")
        assert value(found, "triggers_sweeper_redispatched_total", reason="lease_expired") == 1
        assert value(found, "triggers_instances_total", task_kind="python",
                     outcome="finished") == 1  # fmt: skip
        return found

    await eventually(counted)
