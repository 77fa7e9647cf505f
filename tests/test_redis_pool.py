"""The engine's Redis clients wait for a free connection instead of failing (standalone and
cluster), and give up after the pool timeout with an error that says so; the one-timeout
exchange of several commands (connection.exchange) keeps redis-py's guarantees."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from service.engine.connection import (
    HealingConnectionPool,
    HiredisPackingConnection,
    exchange,
    pooled_exchange,
    redis_client,
)
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


async def test_an_exchange_answers_in_order_with_error_replies_in_place(redis_url: str) -> None:
    """connection.exchange (a script's round trip): every reply read, in order, so the
    connection stays in step after an error reply and carries the next exchange."""
    client = redis_client(redis_url, max_connections=1)
    key = f"{unique_prefix()}:n"
    pool: Any = client.connection_pool
    connection = await pool.get_connection()
    try:
        replies = await exchange(
            connection, [("INCR", key), ("HGET", key, "x"), ("INCR", key), ("GET", key)]
        )
        assert replies[0] == 1 and replies[2] == 2 and replies[3] == "2"
        assert isinstance(replies[1], ResponseError)  # WRONGTYPE, in its command's place
        assert await exchange(connection, [("GET", key)]) == ["2"]
    finally:
        await pool.release(connection)
        await client.aclose()


async def test_an_exchange_past_the_socket_timeout_fails_and_closes_the_connection(
    redis_url: str,
) -> None:
    client = Redis(connection_pool=HealingConnectionPool.from_url(
        redis_url, connection_class=HiredisPackingConnection, socket_timeout=0.3,
        decode_responses=True,
    ))  # fmt: skip
    pool: Any = client.connection_pool
    connection = await pool.get_connection()
    try:
        with pytest.raises(RedisTimeoutError, match="Timeout reading from"):
            await exchange(connection, [("BLPOP", f"{unique_prefix()}:empty", 2)])
        assert not connection.is_connected  # never reused mid-exchange
        assert await exchange(connection, [("PING",)]) == ["PONG"]  # opened again
    finally:
        await pool.release(connection)
        await client.aclose()


async def test_an_exchange_cancelled_midway_closes_the_connection(redis_url: str) -> None:
    client = redis_client(redis_url, max_connections=1)
    pool: Any = client.connection_pool
    connection = await pool.get_connection()
    try:
        task = asyncio.create_task(exchange(connection, [("BLPOP", f"{unique_prefix()}:e", 2)]))
        await asyncio.sleep(0.3)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert not connection.is_connected
    finally:
        await pool.release(connection)
        await client.aclose()


async def test_an_exchange_on_a_connection_the_server_closed_reopens_it_first(
    redis_url: str,
) -> None:
    client = redis_client(redis_url, max_connections=1)
    admin = redis_client(redis_url)
    key = f"{unique_prefix()}:once"
    pool: Any = client.connection_pool
    connection = await pool.get_connection()
    try:
        [connection_id] = await exchange(connection, [("CLIENT", "ID")])
        await admin.execute_command("CLIENT", "KILL", "ID", connection_id)
        await asyncio.sleep(0.1)  # the close reaches the connection's reader
        assert await exchange(connection, [("INCR", key)]) == [1]  # sent once, on a new one
        assert await admin.get(key) == "1"
    finally:
        await pool.release(connection)
        await client.aclose()
        await admin.aclose()


def standalone(url: str, **options: Any) -> Redis:
    """The engine's client on a standalone Redis."""
    client = redis_client(url, **options)
    assert isinstance(client, Redis)
    return client


async def test_pooled_exchanges_park_their_connection_and_reuse_it(redis_url: str) -> None:
    client = standalone(redis_url, max_connections=8)
    pool: Any = client.connection_pool
    try:
        [first] = await pooled_exchange(client, [("CLIENT", "ID")])
        assert [await pooled_exchange(client, [("CLIENT", "ID")]) for _ in range(3)] == [
            [first]
        ] * 3
        assert len(pool._parked) == 1  # still counted in use: nobody else is handed it
        assert len(pool._in_use_connections) == 1 and not pool._available_connections
        # concurrent exchanges each take a connection; at most a quarter of the pool is parked
        await asyncio.gather(*(pooled_exchange(client, [("PING",)]) for _ in range(6)))
        assert len(pool._parked) == 2
    finally:
        await client.aclose()
    assert not any(c.is_connected for c in pool._parked)  # closed with the pool


async def test_a_parked_connection_the_server_closed_is_reopened_before_the_send(
    redis_url: str,
) -> None:
    client = standalone(redis_url, max_connections=4)
    admin = standalone(redis_url)
    key = f"{unique_prefix()}:parked"
    try:
        [parked_id] = await pooled_exchange(client, [("CLIENT", "ID")])
        await admin.client_kill_filter(_id=parked_id)
        await asyncio.sleep(0.1)  # the close reaches the parked connection's reader
        assert await pooled_exchange(client, [("INCR", key)]) == [1]  # sent once, on a new one
        [now_id] = await pooled_exchange(client, [("CLIENT", "ID")])
        assert now_id != parked_id and await admin.get(key) == "1"
    finally:
        await client.aclose()
        await admin.aclose()


async def test_a_failed_exchange_gives_its_connection_back_closed_and_a_small_pool_parks_none(
    redis_url: str,
) -> None:
    client = standalone(redis_url, max_connections=4)
    pool: Any = client.connection_pool
    try:
        pool.connection_kwargs["socket_timeout"] = 0.2  # the next connection made times out
        with pytest.raises(RedisTimeoutError):
            await pooled_exchange(client, [("BLPOP", f"{unique_prefix()}:never", 2)])
        assert not pool._parked and not pool._in_use_connections  # released, closed
        assert all(not c.is_connected for c in pool._available_connections)
    finally:
        await client.aclose()
    small = standalone(redis_url, max_connections=3)  # a quarter of it: none parked
    small_pool: Any = small.connection_pool
    try:
        assert await pooled_exchange(small, [("PING",)]) == ["PONG"]
        assert not small_pool._parked
        assert len(small_pool._available_connections) == 1
    finally:
        await small.aclose()


async def test_a_parked_connection_with_bytes_waiting_is_replaced_so_replies_stay_in_step(
    redis_url: str,
) -> None:
    client = standalone(redis_url, max_connections=4)
    key = f"{unique_prefix()}:stray"
    pool: Any = client.connection_pool
    try:
        await pooled_exchange(client, [("PING",)])
        [parked] = pool._parked
        parked._writer.write(b"*1\r\n$4\r\nPING\r\n")  # a reply nobody will read: stray bytes
        await parked._writer.drain()
        await asyncio.sleep(0.2)  # the +PONG reaches the connection's reader
        assert await pooled_exchange(client, [("INCR", key)]) == [1]  # its own reply
        assert await pooled_exchange(client, [("GET", key)]) == ["1"]
    finally:
        await client.aclose()
