"""The lease keeper against real Redis servers (issue 14, item 3): a renewal that meets BUSY
or a stopped server is retried until the lease runs out; a refused renewal, or an expiry with
no successful renewal, means the lease is lost."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from service.engine import Engine
from service.redis_server import RedisServer
from service.worker.lease import LeaseKeeper

CONFIG = {"tasks": {"t": {"after": ["go"], "run": "P"}}}
BUSY_SCRIPT = """
local start = redis.call('TIME')
local until_us = start[1] * 1000000 + start[2] + tonumber(ARGV[1]) * 1000
repeat
  local now = redis.call('TIME')
until now[1] * 1000000 + now[2] >= until_us
return 1
"""


@pytest.fixture
async def private_redis() -> AsyncIterator[RedisServer]:
    """A server of this test's own: it is made BUSY or stopped."""
    with RedisServer(extra_config={"lua-time-limit": "100"}) as server:
        yield server


async def claimed(engine: Engine) -> tuple[str, str, float]:
    uid = f"keep-{uuid.uuid4().hex[:8]}"
    await engine.configure(uid, CONFIG)
    await engine.fire(uid, "go")
    sent_at = time.monotonic()
    claim = await engine.claim(uid, "t#0")
    assert claim.token is not None
    return uid, claim.token, sent_at


async def test_renewals_outlast_a_busy_redis(private_redis: RedisServer) -> None:
    engine = Engine(Redis.from_url(private_redis.url, decode_responses=True), lease_ms=4000)
    blocker = Redis.from_url(private_redis.url)
    try:
        uid, token, sent_at = await claimed(engine)
        keeper = LeaseKeeper(engine, uid, "t#0", token, sent_at)
        keeping = asyncio.create_task(keeper.keep())
        for _ in range(2):  # busy spells: every renewal meanwhile is answered BUSY
            await blocker.eval(BUSY_SCRIPT, 0, 1500)
            await asyncio.sleep(0.8)
        await asyncio.sleep(4.5)  # past the lease: only renewals kept it
        assert not keeper.lost.is_set(), keeper.reason
        keeping.cancel()
        await engine.complete(uid, "t#0", token, {})  # the token is still the live one
        assert (await engine.instance(uid, "t#0")).status == "finished"
    finally:
        await blocker.aclose()
        await engine.aclose()


async def test_a_refused_renewal_means_the_lease_is_lost(engine: Engine) -> None:
    engine.lease_ms = 500
    uid, token, _ = await claimed(engine)
    await asyncio.sleep(0.6)
    assert (await engine.claim(uid, "t#0")).attempt == 2  # expired: another worker took it
    engine.lease_ms = 4000
    keeper = LeaseKeeper(engine, uid, "t#0", token, time.monotonic())
    await asyncio.wait_for(keeper.keep(), 10)
    assert keeper.lost.is_set() and "stale lease token" in keeper.reason


async def test_no_successful_renewal_before_the_expiry_means_the_lease_is_lost(
    private_redis: RedisServer,
) -> None:
    engine = Engine(Redis.from_url(private_redis.url, decode_responses=True), lease_ms=2000)
    try:
        uid, token, sent_at = await claimed(engine)
        keeper = LeaseKeeper(engine, uid, "t#0", token, sent_at)
        private_redis.stop()
        await asyncio.wait_for(keeper.keep(), 10)
        assert keeper.lost.is_set() and "expired" in keeper.reason
        assert time.monotonic() <= sent_at + 2.0  # never later than the lease Redis keeps
    finally:
        await engine.aclose()


async def test_watch_renews_from_a_timer_and_reports_a_loss(engine: Engine) -> None:
    """``watch`` (what a worker's run uses): the lease outlives its length through renewals
    started by the timer; once another worker holds the instance, ``on_lost`` is called."""
    engine.lease_ms = 800
    uid, token, sent_at = await claimed(engine)
    keeper = LeaseKeeper(engine, uid, "t#0", token, sent_at)
    lost = asyncio.Event()
    keeper.watch(lost.set)
    try:
        await asyncio.sleep(2.0)  # two and a half leases: only renewals kept it
        assert not keeper.lost.is_set(), keeper.reason
        instance = await engine.instance(uid, "t#0")
        assert instance.status == "running" and instance.metadata["attempt"] == 1
        await engine.set_status(uid, "t#0", "scheduled")  # taken away: the next renewal fails
        await asyncio.wait_for(lost.wait(), 10)
        assert keeper.lost.is_set() and keeper.reason.startswith("renewal refused")
    finally:
        keeper.stop()


async def test_stop_before_the_first_renewal_leaves_nothing_running(engine: Engine) -> None:
    engine.lease_ms = 400
    uid, token, sent_at = await claimed(engine)
    keeper = LeaseKeeper(engine, uid, "t#0", token, sent_at)
    lost = asyncio.Event()
    keeper.watch(lost.set)
    keeper.stop()  # the run ended at once: no renewal, no loss reported
    await asyncio.sleep(0.8)  # past the lease: nobody renewed it, nobody reported anything
    assert not lost.is_set() and not keeper.lost.is_set()
    assert (await engine.claim(uid, "t#0")).attempt == 2  # expired, unrenewed
