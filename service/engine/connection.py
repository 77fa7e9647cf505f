"""Redis clients for the engine: a bounded pool that waits, connections that are replaced
before use when Redis closed them, commands that are never sent twice.

Three choices, each against a failure seen in production-like tests (issue 14, item 10):

* **Bursts wait, they do not fail.** redis-py's asyncio ``ConnectionPool`` raises "Too many
  connections" when its 100 connections are busy: 1,000 concurrent fires got 900 x 503. We use
  ``BlockingConnectionPool`` (``TRIGGERS_REDIS_MAX_CONNECTIONS`` connections; a request waits
  up to ``TRIGGERS_REDIS_POOL_TIMEOUT`` seconds for one, then 503). redis-py has no blocking
  pool for Redis Cluster (a node with all its connections busy raises ``MaxConnectionsError``),
  so ``WaitingRedisCluster`` lets at most that many commands be in flight per client, the
  others wait their turn: no node can then be asked for more connections than it has.
* **A connection found dead before a command is sent is replaced, silently.** When Redis
  restarts, it closes every pooled connection; redis-py 8 skips its own "is the socket clean"
  check when the pool hands a connection out whenever maintenance notifications are on (its
  default, "auto"), so the first command on each such connection failed with "Connection
  closed by server" (59 of 60 requests after a restart). ``HealingConnectionPool`` makes that
  check itself: a connection at end-of-file (or with unread bytes) is closed and opened again
  before it is handed out, so nothing was sent on it. A connection idle longer than
  ``HEALTH_CHECK_SECONDS`` is also PINGed before use (redis-py's ``health_check_interval``),
  which catches a server that vanished without closing the socket; if that PING fails the
  request fails before its command is sent. On a cluster, redis-py closes every idle
  connection of a node after the first connection error on it, so one request per restarted
  node may see the error.
* **A command whose outcome is unknown is never re-sent.** redis-py's default ``Retry`` (three
  attempts on ``ConnectionError``/``TimeoutError``, also what ``retry_on_error`` adds to) wraps
  the whole send-and-read, so a script that ran but whose answer was lost would run again
  (twice the ``andEvery`` instances, say). The cluster client re-executes the same way. We set
  ``Retry(NoBackoff(), 0)`` on both: after a send, an error is reported (the API answers 503
  "may have been applied", the sweeper repairs what was committed).

The connection class also packs commands with hiredis (C) instead of redis-py's Python packer:
our scripts take eleven keys and a few arguments, and profiling a fire showed that packing them
took about a third of the client side of the call. hiredis ships ``pack_command``; the sync
redis-py client uses it, the asyncio one does not yet.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from typing import Any

import hiredis
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import AbstractConnection, Connection
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

HEALTH_CHECK_SECONDS = 5
"""A pooled connection idle longer than this is PINGed before use: a server that vanished
without closing the socket (a network cut) costs a reconnect, not a request."""


def no_retry() -> Retry:
    """Never re-send a command: after it was written, its outcome is unknown."""
    return Retry(NoBackoff(), 0)


class HiredisPackingConnection(Connection):
    """Packs commands with hiredis."""

    async def send_packed_command(
        self, command: str | bytes | Iterable[bytes], check_health: bool = True
    ) -> None:
        """A pooled connection the server closed meanwhile (its reader already saw the end of
        the stream) is reconnected BEFORE anything is written to it: the command then either
        reaches a live server or fails to connect, and a failure is known to precede the send
        (the API answers 503, safe to retry, not outcome-unknown; see api/problems.py)."""
        await self.drop_if_closed_by_server()
        await super().send_packed_command(command, check_health)

    async def drop_if_closed_by_server(self) -> None:
        """Close the connection when its reader saw the end of the stream (the server closed
        it): the send that follows opens a new one."""
        reader = self._reader
        if reader is not None and reader.at_eof():
            await self.disconnect(nowait=True)

    def pack_all(self, commands: Sequence[tuple[Any, ...]]) -> list[bytes]:
        """Several commands packed by hiredis into one buffer (redis-py's ``pack_commands``
        re-chunks each command's output in Python); what hiredis does not pack goes through
        ``pack_commands``."""
        if not any(isinstance(c[0], str) and " " in c[0] for c in commands):  # "CONFIG GET"
            try:
                return [b"".join([hiredis.pack_command(command) for command in commands])]
            except TypeError:
                pass
        return self.pack_commands(commands)

    def pack_command(self, *args: Any) -> list[bytes]:
        first = args[0]
        if isinstance(first, str) and " " in first:  # "CONFIG GET": split like redis-py does
            args = (*first.split(), *args[1:])
        try:
            return [hiredis.pack_command(args)]
        except TypeError:  # a type hiredis does not pack: let redis-py encode it
            return super().pack_command(*args)


async def exchange(
    connection: AbstractConnection, commands: Sequence[tuple[Any, ...]]
) -> list[Any]:
    """Write ``commands`` at once on ``connection`` and read their replies in order (an error
    reply is returned in its place, as a ``ResponseError``), the whole exchange within ONE
    socket timeout.

    redis-py's own calls (``send_packed_command``, then ``read_response`` per reply) run each
    write in a task of its own (``asyncio.wait_for``) and arm a timer per reply: for a fire's
    four commands, five timers and a task, about a third of the client side of its round trip
    (bench/fire_wrk.py). The guarantees are redis-py's: a connection the server closed is
    opened again before anything is written (``HiredisPackingConnection``), an idle one is
    PINGed first (``health_check_interval``), the exchange fails with redis-py's
    ``TimeoutError`` after ``socket_timeout`` seconds and with its ``ConnectionError`` when the
    socket fails (the same messages: api/problems.py reads them), and a connection interrupted
    mid-exchange, whatever the cause (a cancelled request too), is closed, never reused. Nothing
    is re-sent. Relies on redis-py's ``_writer`` (an asyncio StreamWriter) and
    ``_read_response_from_parser`` (tests/test_redis_pool.py runs it against the installed
    redis-py)."""
    if isinstance(connection, HiredisPackingConnection):
        packed = connection.pack_all(commands)
        await connection.drop_if_closed_by_server()
    else:
        packed = connection.pack_commands(commands)
    if not connection.is_connected:
        await connection.connect_check_health(check_health=False)
    await connection.check_health()  # type: ignore[no-untyped-call]
    writing = True
    try:
        async with asyncio.timeout(connection.socket_timeout or None):  # 0, None: no limit
            writer: Any = connection._writer
            writer.writelines(packed)
            await writer.drain()
            writing = False
            replies = [await connection._read_response_from_parser() for _ in commands]
    except TimeoutError:  # asyncio's (the builtin), not redis-py's
        await connection.disconnect(nowait=True)
        if writing:
            raise RedisTimeoutError("Timeout writing to socket") from None
        raise RedisTimeoutError(f"Timeout reading from {connection._host_error()}") from None
    except OSError as error:
        await connection.disconnect(nowait=True)
        if writing:
            number, message = ("UNKNOWN", error.args[0]) if len(error.args) == 1 else error.args[:2]
            raise RedisConnectionError(
                f"Error {number} while writing to socket. {message}."
            ) from error
        raise RedisConnectionError(
            f"Error while reading from {connection._host_error()} : {error.args}"
        ) from None
    except BaseException:
        await connection.disconnect(nowait=True)
        raise
    if connection.health_check_interval:
        loop = asyncio.get_running_loop()
        connection.next_health_check = loop.time() + connection.health_check_interval
    return replies


async def pooled_exchange(client: Redis, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
    """``exchange`` on a connection of ``client``'s pool (standalone Redis), given back after
    (closed first when the exchange was interrupted). A ``HealingConnectionPool`` keeps a few
    connections parked for exchanges (see there)."""
    pool: Any = client.connection_pool
    parking = isinstance(pool, HealingConnectionPool)
    connection = await pool.take_parked() if parking else None
    if connection is None:
        connection = await pool.get_connection()
    parked = False
    try:
        replies = await exchange(connection, commands)
        parked = parking and pool.park(connection)
        return replies
    finally:
        if not parked:
            await pool.release(connection)


PARKED = 4
"""Most connections a pool keeps parked for exchanges (a worker's concurrent exchanges: its
coalesced scripts, fetches and acks, sends; a quarter of the pool at most)."""


class HealingConnectionPool(BlockingConnectionPool):
    """A blocking pool that hands out only connections able to carry a request.

    ``pooled_exchange`` parks the connection of an exchange that went through instead of
    giving it back, and takes a parked one first: redis-py's checkout and release (a condition,
    a timeout, its observability hooks, the health checks) were a tenth of a worker's CPU per
    no-op task (py-spy, bench/pipeline.py). What they checked is still checked: a parked
    connection the server closed, or with bytes waiting on it, is closed when taken (and the
    exchange opens it again before writing), ``exchange`` PINGs one idle longer than the
    health-check interval and closes one it left mid-reply. Parked connections count as in use
    (redis-py's pool metrics show them as used): at most a quarter of the pool (and PARKED) is
    parked, so the other three quarters stay for other callers, and ``disconnect`` closes them
    with the rest."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._parked: list[AbstractConnection] = []
        self._most_parked = min(PARKED, self.max_connections // 4)

    async def take_parked(self) -> AbstractConnection | None:
        """The most recently parked connection, if any; closed first (the exchange opens it
        again before writing) when the server closed it or bytes wait on it, as the pool's
        own check would (a proxy's error before it closes, say)."""
        if not self._parked:
            return None
        connection = self._parked.pop()
        if await _closed_by_server(connection):
            await connection.disconnect()
        return connection

    def park(self, connection: AbstractConnection) -> bool:
        """Keep ``connection`` for the next exchange (False: there is no room, release it)."""
        if len(self._parked) >= self._most_parked or not connection.is_connected:
            return False
        self._parked.append(connection)
        return True

    async def ensure_connection(self, connection: AbstractConnection) -> None:
        # redis-py makes this same check only when maintenance notifications are off; with
        # them on (its default), a connection the server closed went out and failed.
        if connection.is_connected and await _closed_by_server(connection):
            await connection.disconnect()
        await super().ensure_connection(connection)


async def _closed_by_server(connection: AbstractConnection) -> bool:
    """End of file or stray bytes on an idle connection: the server closed it (a restart) or
    an earlier exchange was cut; either way it cannot carry a request. (Checked only when the
    pool hands the connection out: between two commands, nothing is in flight on it.)"""
    try:
        return bool(await connection.can_read())
    except (RedisConnectionError, OSError):
        return True


class WaitingRedisCluster(RedisCluster):
    """A cluster client whose callers wait for a free connection instead of failing.

    At most ``max_connections`` commands are in flight at once; each uses one connection of
    one node, so no node ever runs out of connections. A caller that waits longer than
    ``pool_timeout`` seconds gets ``ConnectionError("No connection available.")``, as from
    ``BlockingConnectionPool``. (Cluster pipelines bypass this; the engine sends none.)
    """

    def __init__(self, *args: Any, pool_timeout: float = 10.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pool_timeout = pool_timeout
        self._in_flight = asyncio.Semaphore(kwargs.get("max_connections", 100))

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        try:
            async with asyncio.timeout(self.pool_timeout):
                await self._in_flight.acquire()
        except TimeoutError:  # asyncio.timeout's, the builtin
            raise RedisConnectionError("No connection available.") from None
        try:
            return await super().execute_command(*args, **kwargs)
        finally:
            self._in_flight.release()


def redis_client(
    url: str, *, cluster: bool = False, max_connections: int = 100, pool_timeout: float = 10.0
) -> Redis | WaitingRedisCluster:
    """A client on a new pool of at most ``max_connections`` connections (per cluster node),
    waiting up to ``pool_timeout`` seconds for a free one (``cluster``: the URL names a node)."""
    options: dict[str, Any] = {
        "decode_responses": True,
        "connection_class": HiredisPackingConnection,
        "health_check_interval": HEALTH_CHECK_SECONDS,
        "max_connections": max_connections,
        "retry": no_retry(),
    }
    if cluster:
        client = WaitingRedisCluster.from_url(url, pool_timeout=pool_timeout, **options)
        assert isinstance(client, WaitingRedisCluster)
        return client
    pool = HealingConnectionPool.from_url(url, timeout=pool_timeout, **options)
    return Redis.from_pool(pool)
