"""Reading a session's event log (the stream lua/includes/lib.lua writes, key 14).

Scripts write one stream entry per change (``at``, ``e``: the change's events, ``a``: the API
key that made it). An instance's event is stored without its ``task`` (the part of the
instance name before "#"); it is added back here, so every reader sees it. Readers see each
event on its own, carrying the entry's id: the id is the cursor (``Last-Event-ID``, ``since``,
``next``), so a reader resumes after a whole change.
Reading is plain XRANGE / XREAD: a read changes nothing, so it needs no script.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import orjson
from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.cluster import RedisCluster

from service.engine.errors import InvalidError
from service.engine.keys import events_key
from service.engine.scripts import RedisClient

_STREAM_ID = re.compile(r"\d{1,20}-\d{1,20}")


def check_cursor(cursor: str | None, field: str = "since") -> str | None:
    """A stream id (``<ms>-<n>``) or None; anything else is the caller's mistake (4xx)."""
    if cursor is None or cursor == "":
        return None
    if not _STREAM_ID.fullmatch(cursor):
        raise InvalidError(f"{field}: an event id like 1733000000000-0 expected")
    return cursor


def _iso(ms: int) -> str:
    from service.engine.engine import iso_time  # the engine's one time format

    return iso_time(ms)


def decode_entry(entry_id: str, fields: dict[str, str]) -> list[dict[str, Any]]:
    """One stream entry as the events it holds, each with the entry's id, time and actor."""
    at = _iso(int(fields.get("at", "0")))
    actor = fields.get("a")
    events: list[dict[str, Any]] = []
    raw = orjson.loads(fields.get("e", "[]"))
    for item in raw if isinstance(raw, list) else []:
        event = {"id": entry_id, "at": at, **item}
        if "instance" in item and "task" not in item:  # stored without it (lib.lua)
            event["task"] = str(item["instance"]).rsplit("#", 1)[0]
        if actor:
            event["actor"] = actor
        events.append(event)
    return events


@dataclass(frozen=True)
class EventPage:
    events: list[dict[str, Any]]
    next: str | None
    """The id to pass as ``since`` for the following page; None when this page reached the
    end of the log (pass the last event's id, or keep the stream open, to wait for more)."""
    last: str | None
    """The id of the last entry read (the resume point), whatever ``next`` says."""


class EventLog:
    """The event logs of the sessions under one key prefix."""

    def __init__(self, client: RedisClient, prefix: str) -> None:
        self.client = client
        self.prefix = prefix

    def key(self, uid: str) -> str:
        return events_key(uid, self.prefix)

    async def page(self, uid: str, since: str | None, limit: int) -> EventPage:
        """Up to ``limit`` entries after ``since`` (exclusive; None: from the oldest kept)."""
        start = f"({since}" if since else "-"
        answer: Any = await self.client.xrange(self.key(uid), start, "+", count=limit + 1)
        found: list[Any] = list(answer or [])
        more = len(found) > limit
        found = found[:limit]
        events = [event for entry_id, fields in found for event in decode_entry(entry_id, fields)]
        last = found[-1][0] if found else since
        return EventPage(events, last if more else None, last)

    def follower(self, uid: str) -> EventFollower:
        """A reader that waits for new entries on a connection of its own (XREAD BLOCK holds
        its connection, so it must never hold one of the shared pool's)."""
        return EventFollower(self.client, self.key(uid))


class EventFollower:
    """XREAD BLOCK on a dedicated connection to the node that holds one session's log."""

    def __init__(self, client: RedisClient, key: str) -> None:
        self.key = key
        self.connection: Redis = _dedicated(client, key)

    async def wait(self, after: str, block_ms: int) -> list[tuple[str, dict[str, str]]]:
        """Entries after ``after`` ("0-0": from the start), waiting up to ``block_ms``."""
        answer: Any = await self.connection.xread({self.key: after}, count=100, block=block_ms)
        if not answer:
            return []
        entries: list[tuple[str, dict[str, str]]] = answer[0][1]
        return entries

    async def aclose(self) -> None:
        await self.connection.aclose()
        await self.connection.connection_pool.disconnect()


def _dedicated(client: RedisClient, key: str) -> Redis:
    """A one-connection client to the node that serves ``key`` (on a cluster: the primary of
    the key's slot), made with the shared client's connection class and settings (TLS,
    credentials, unix socket and all), without a socket timeout: a blocking read waits."""
    connection_class: type[Any]
    if isinstance(client, RedisCluster):
        node = client.get_node_from_key(key)
        if node is None:
            raise RuntimeError(f"no cluster node serves {key}")
        connection_class, kwargs = node.connection_class, dict(node.connection_kwargs)
    else:
        pool = client.connection_pool
        connection_class, kwargs = pool.connection_class, dict(pool.connection_kwargs)
    for unwanted in ("event_dispatcher", "response_callbacks"):
        kwargs.pop(unwanted, None)
    kwargs.update(socket_timeout=None, decode_responses=True)
    pool = ConnectionPool(connection_class=connection_class, max_connections=1, **kwargs)
    return Redis(connection_pool=pool)
