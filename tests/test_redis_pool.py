"""The engine's Redis clients wait for a free connection instead of failing (standalone and
cluster), and give up after the pool timeout with an error that says so."""

from __future__ import annotations

import asyncio

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from service.engine.connection import redis_client
from service.redis_server import RedisClusterServer
from tests.conftest import unique_prefix


@pytest.mark.parametrize("topology", ["redis", "cluster"])
async def test_two_hundred_commands_share_two_connections(
    request: pytest.FixtureRequest, redis_url: str, topology: str
) -> None:
    if topology == "cluster":
        cluster: RedisClusterServer = request.getfixturevalue("redis_cluster")
        client = redis_client(cluster.url, cluster=True, max_connections=2)
    else:
        client = redis_client(redis_url, max_connections=2)
    prefix = unique_prefix()
    try:
        answers = await asyncio.gather(*(client.incr(f"{prefix}:{n % 7}") for n in range(200)))
        assert sorted(answers)[-1] >= 200 // 7 and len(answers) == 200
    finally:
        await client.aclose()


async def test_a_request_that_waits_past_the_pool_timeout_fails_before_sending(
    redis_url: str,
) -> None:
    client = redis_client(redis_url, max_connections=1, pool_timeout=0.2)
    blocker = redis_client(redis_url)
    key = f"{unique_prefix()}:list"
    try:
        waiting = asyncio.create_task(client.blpop([key], timeout=3))  # holds the connection
        await asyncio.sleep(0.5)
        with pytest.raises(RedisConnectionError, match="No connection available"):
            await client.incr(f"{key}:n")
        assert await blocker.get(f"{key}:n") is None  # never sent
        await blocker.rpush(key, "x")
        assert list(await waiting) == [key, "x"]
    finally:
        await client.aclose()
        await blocker.aclose()
