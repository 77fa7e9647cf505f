"""HTTP tasks have a total deadline (issue 14, item 6): TRIGGERS_HTTP_MAX_TIMEOUT bounds one
request, connect and every read together, whatever the per-read timeouts; per-task
``connectTimeout``/``readTimeout`` directives are clamped to it. An endpoint that trickles its
answer a byte at a time can no longer hold a worker thread for as long as it likes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator

import httpx
import pytest
from redis.asyncio import Redis

from service.engine import Engine, Instance
from tests.e2e.conftest import Stack, new_uid, wait_for
from tests.e2e.isolated import SlowEndpoints, isolated_stack, slow_endpoints
from tests.e2e.test_execution import configure, fire

MAX_TIMEOUT = 4  # seconds; the trickling answer takes 40 s


@pytest.fixture(scope="module")
def endpoints() -> Iterator[SlowEndpoints]:
    with slow_endpoints(trickle_every=2.0) as found:
        yield found


@pytest.fixture(scope="module")
def deadline_stack(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Two worker threads, as a small deployment has; a 4 s total deadline."""
    folder = tmp_path_factory.mktemp("deadline")
    with isolated_stack(
        redis_url, folder, threads=2, TRIGGERS_HTTP_MAX_TIMEOUT=str(MAX_TIMEOUT)
    ) as stack:
        yield stack


@pytest.fixture
async def engine(deadline_stack: Stack, redis_url: str) -> AsyncIterator[Engine]:
    found = Engine(Redis.from_url(redis_url, decode_responses=True), prefix=deadline_stack.prefix,
                   finalize=False)  # fmt: skip
    yield found
    await found.aclose()


@pytest.fixture
async def client(deadline_stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=deadline_stack.api_url, timeout=10) as http:
        yield http


def status_of(name: str, status: str) -> Callable[[dict[str, Instance]], bool]:
    return lambda instances: name in instances and instances[name].status == status


@pytest.mark.timeout(120)
async def test_a_trickling_answer_ends_at_the_total_deadline(
    client: httpx.AsyncClient, engine: Engine, endpoints: SlowEndpoints
) -> None:
    uid = new_uid()
    path = f"/trickle/{uid}"
    await configure(client, uid, {"t": {"after": ["go"], "run": endpoints.url(path),
                                        "readTimeout": 3}})  # fmt: skip
    await fire(client, uid, "go")
    # a byte every 2 s never trips the 3 s read timeout; only the total deadline ends it (the
    # whole answer would take 40 s: waiting 30 s tells the two apart with a wide margin)
    instances = await wait_for(engine, uid, status_of("t#0", "failed"), timeout=30)
    metadata = instances["t#0"].metadata
    assert metadata["exceptionType"] == "triggers.HttpDeadlineExceeded"
    assert f"{MAX_TIMEOUT} s" in metadata["exceptionInfo"]
    assert len(endpoints.calls_to(path)) == 1


@pytest.mark.timeout(120)
async def test_one_tenants_trickling_tasks_cannot_hold_another_tenants_work(
    client: httpx.AsyncClient, engine: Engine, endpoints: SlowEndpoints
) -> None:
    """Both worker threads taken by tasks that ask for a read timeout of 1e9 s: the other
    tenant's trivial task runs as soon as the total deadline frees a thread."""
    greedy = [new_uid() for _ in range(2)]
    for uid in greedy:
        url = endpoints.url(f"/trickle/{uid}")
        await configure(client, uid, {"t": {"after": ["go"], "run": url, "readTimeout": 1e9,
                                            "connectTimeout": 1e9}})  # fmt: skip
        await fire(client, uid, "go")
    deadline = time.monotonic() + 30
    while sum(endpoints.running.get(f"/trickle/{uid}", 0) for uid in greedy) < 2:
        assert time.monotonic() < deadline, "the trickling tasks did not start"
        await asyncio.sleep(0.05)
    other = new_uid()
    await configure(client, other, {"t": {"after": ["go"], "run": "echo"}})
    await fire(client, other, "go")
    await wait_for(engine, other, status_of("t#0", "finished"), timeout=30)
    for uid in greedy:
        instances = await wait_for(engine, uid, status_of("t#0", "failed"), timeout=30)
        assert instances["t#0"].metadata["exceptionType"] == "triggers.HttpDeadlineExceeded"
