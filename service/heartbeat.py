"""Worker heartbeats: how the API, ``triggers doctor`` and exec probes know workers are alive.

Every worker process writes, every ``TRIGGERS_HEARTBEAT_INTERVAL`` seconds:

* ``<prefix>:worker:<host>:<pid>``: a JSON description (host, pid, version, the signing
  secret's fingerprint, this host's clock) with a TTL of three intervals: it vanishes by itself
  when the process dies, however it dies;
* ``<prefix>:workers``: a sorted set of the same ids scored by when their beat goes stale
  (ms), so counting the live ones is one ZCOUNT, never a keyspace scan. Each beat also drops
  the members stale for long (a process killed without a word).

These are deployment keys, not session state: single-key commands, no script, and they work
on Redis Cluster as they are. The signing secret is never written, only a fingerprint (the
first 12 hex digits of its SHA-256), so processes can be compared without revealing it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import threading
import time
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from service.settings import Settings

log = logging.getLogger(__name__)

STALE_AFTER = 3
"""A beat is stale after this many intervals without a new one."""
FORGET_AFTER_MS = 3_600_000
"""Stale members older than this leave the index (kept an hour for `triggers doctor`)."""


def index_key(prefix: str) -> str:
    return f"{prefix}:workers"


def beat_key(prefix: str, worker_id: str) -> str:
    return f"{prefix}:worker:{worker_id}"


def this_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def fingerprint(secret: str) -> str:
    """Tells whether two processes sign with the same secret, without revealing it."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()[:12]


def beat(client: Any, prefix: str, worker_id: str, info: dict[str, Any], interval: float) -> None:
    """One heartbeat (a synchronous redis-py client, standalone or cluster)."""
    now_ms = int(time.time() * 1000)
    stale_ms = int(interval * STALE_AFTER * 1000)
    payload = orjson.dumps({**info, "at": now_ms})
    client.set(beat_key(prefix, worker_id), payload, px=stale_ms)
    client.zadd(index_key(prefix), {worker_id: now_ms + stale_ms})
    client.zremrangebyscore(index_key(prefix), "-inf", now_ms - FORGET_AFTER_MS)


def alive_ids(client: Any, prefix: str) -> list[str]:
    """Ids of the workers whose beat is fresh (synchronous client)."""
    found = client.zrangebyscore(index_key(prefix), int(time.time() * 1000), "+inf")
    return [item.decode() if isinstance(item, bytes) else str(item) for item in found]


async def count_alive(client: Any, prefix: str) -> int:
    """How many workers have a fresh beat (asyncio client): one ZCOUNT."""
    return int(await client.zcount(index_key(prefix), int(time.time() * 1000), "+inf"))


def descriptions(client: Any, prefix: str, ids: list[str]) -> list[dict[str, Any]]:
    """The live workers' own descriptions (synchronous client; one GET each)."""
    found = []
    for worker_id in ids:
        raw = client.get(beat_key(prefix, worker_id))
        if raw:
            found.append({"id": worker_id, **orjson.loads(raw)})
    return found


def sync_client(settings: Settings) -> Any:
    """A synchronous client on the state Redis (standalone or cluster)."""
    from redis import Redis
    from redis.cluster import RedisCluster

    assert settings.redis_url
    if settings.redis_cluster:
        return RedisCluster.from_url(settings.redis_url, socket_timeout=5)
    return Redis.from_url(settings.redis_url, socket_timeout=5, socket_connect_timeout=5)


class Heartbeat:
    """Beats from a daemon thread until stopped; a failed beat is logged and retried (a beat
    that stops is the signal, so the thread never dies on a Redis error)."""

    def __init__(self, client: Any, prefix: str, info: dict[str, Any], interval: float) -> None:
        self.client = client
        self.prefix = prefix
        self.info = info
        self.interval = interval
        self.worker_id = this_worker_id()
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, name="triggers-heartbeat", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _run(self) -> None:
        while not self.stop_event.is_set():
            try:
                beat(self.client, self.prefix, self.worker_id, self.info, self.interval)
            except Exception as error:
                log.warning("heartbeat not written (%s: %s)", type(error).__name__, error)
            self.stop_event.wait(self.interval)

    def stop(self) -> None:
        """Stop beating and withdraw: a worker that shuts down cleanly is gone at once."""
        self.stop_event.set()
        self.thread.join(5)
        try:
            self.client.delete(beat_key(self.prefix, self.worker_id))
            self.client.zrem(index_key(self.prefix), self.worker_id)
        except Exception as error:
            log.warning("heartbeat not withdrawn (%s: %s)", type(error).__name__, error)
