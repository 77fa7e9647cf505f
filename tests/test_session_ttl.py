"""TRIGGERS_SESSION_TTL without gaps (issue 14, item 9): a session never expires while it has
work outstanding, and everything of it expires with it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from service.engine import Engine
from service.webhooks.store import Attempt, DeliveryStore
from tests.conftest import unique_prefix

TTL = 3
CONFIG = {"tasks": {"t": {"after": ["go"], "run": "P", "maxRetries": 2}}}


@pytest.fixture
async def short_lived(redis_url: str) -> AsyncIterator[Engine]:
    """Sessions kept 3 s after their last change; leases of 1.5 s."""
    engine = Engine(Redis.from_url(redis_url, decode_responses=True), prefix=unique_prefix(),
                    session_ttl=TTL, lease_ms=1500)  # fmt: skip
    await engine.load_scripts()
    yield engine
    await engine.aclose()


async def session_keys_left(engine: Engine, uid: str) -> list[str]:
    return sorted(await engine.client.keys(f"{engine.prefix}:{{{uid}}}:*"))


@pytest.mark.slow
async def test_a_task_running_past_the_ttl_renewing_its_lease_completes(
    short_lived: Engine,
) -> None:
    engine, uid = short_lived, "ttl:running"
    await engine.configure(uid, CONFIG)
    await engine.fire(uid, "go")
    claim = await engine.claim(uid, "t#0")
    assert claim.token is not None
    until = time.monotonic() + 8  # the task runs 8 s, renewing every 0.5 s as a worker does
    while time.monotonic() < until:
        await asyncio.sleep(0.5)
        await engine.renew_lease(uid, "t#0", claim.token)
    outcome = await engine.complete(uid, "t#0", claim.token, {"done": True})
    assert outcome.instance == "t#0"
    assert (await engine.instance(uid, "t#0")).status == "finished"


@pytest.mark.slow
async def test_a_retry_due_after_the_ttl_still_runs(short_lived: Engine) -> None:
    engine, uid = short_lived, "ttl:retry"
    await engine.configure(uid, CONFIG)
    await engine.fire(uid, "go")
    claim = await engine.claim(uid, "t#0")
    assert claim.token is not None
    outcome = await engine.retry(uid, "t#0", claim.token, cooldown=TTL + 2)
    assert outcome.clone == "t#1" and outcome.due is not None
    await asyncio.sleep(max(0.0, outcome.due / 1000 - time.time()) + 0.2)
    again = await engine.claim(uid, "t#1")
    assert again.state == "claimed"


@pytest.mark.slow
async def test_an_instance_waiting_for_a_worker_outlives_the_ttl(short_lived: Engine) -> None:
    """Workers busy (a backlog) for longer than the TTL: the scheduled instance waits in the
    outbox, and the session waits with it."""
    engine, uid = short_lived, "ttl:backlog"
    await engine.configure(uid, CONFIG)
    await engine.fire(uid, "go")  # scheduled; no worker takes it for a while
    await asyncio.sleep(TTL + 2)
    assert (await engine.claim(uid, "t#0")).state == "claimed"


@pytest.mark.slow
async def test_delivery_records_expire_with_the_session(short_lived: Engine) -> None:
    engine, uid = short_lived, "ttl:webhooks"
    await engine.configure(uid, CONFIG)
    store, delivery_id = DeliveryStore(engine), "msg_" + "1" * 32
    await store.create(uid, delivery_id, "http://127.0.0.1:9/hook", "sessionFinalized", "{}")
    begun = await store.begin(uid, delivery_id, 1, 10_000)  # a worker's attempt: delivered
    await store.finish(uid, delivery_id, begun.take, Attempt(at=int(time.time() * 1000),
                                                             status=204), "delivered")  # fmt: skip
    delivery = await store.get(uid, delivery_id)
    assert delivery is not None and delivery.state == "delivered"
    deadline = time.monotonic() + 60
    while await engine.client.exists(f"{engine.prefix}:{{{uid}}}:meta"):
        assert time.monotonic() < deadline, "the session never expired"
        await asyncio.sleep(0.2)
    assert await session_keys_left(engine, uid) == []  # nothing of it outlives it
