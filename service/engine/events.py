"""Reading a session's event log (the list lua/includes/lib.lua writes, key 14).

Scripts append one entry per change (lib.lua log_line): ``"<id>\x1e<events>"``, the id
``<ms>[-<n>]`` in base 36. When every event of the change has a common shape (``EVENT_SHAPES``),
the change's time is the id's and no API key made it, they are text: events separated by RS
(``\x1e``), the fields of each, by position, by US (``\x1f``); names hold no control
character. Otherwise a JSON list, each event an array by position or an object with coded
names (``_expanded`` gives both whole names), wrapped as ``{"at", "a", "e"}`` when the change's
time differs from the id's or an API key made it. The earlier layout's entries are
``"<decimal id> <JSON>"``. Readers see every id shaped like a stream id, ``<ms>-<n>`` in
decimal, and it only grows along the log. An instance's event is
stored without its ``task`` (the part of the instance name before "#"); it is added back here,
so every reader sees it. Readers see each event on its own, carrying its entry's id: the id is
the cursor (``Last-Event-ID``, ``since``, ``next``), so a reader resumes after a whole change.

Why a list and not a Redis Stream (issue 11 item 4): a stream preallocates a node of
``stream-node-max-bytes`` (4 KB by default) plus its radix tree, 1.6 KB for a small session's
three entries even at 1 KB nodes; a list holds the same entries in about 0.5 KB. What the
stream gave for free is done here: ids (lib.lua flush_events), paging by id (a binary search
by id over the list, ``page``) and the live tail (short polls, ``EventFollower``: XREAD BLOCK
has no list counterpart that leaves the entries in place).

A session whose log is still a stream (written by an earlier version, not changed since) is
read as a stream (XRANGE): its next logged change turns the log into a list, ids kept.
Reading changes nothing, so it needs no script; the reads are checked against concurrent
appends and trims instead (``_after``).
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass
from typing import Any

import orjson
from redis.exceptions import ResponseError

from service.engine.errors import InvalidError
from service.engine.keys import events_key
from service.engine.scripts import RedisClient

_STREAM_ID = re.compile(r"\d{1,20}-\d{1,20}")
POLL_SECONDS = 0.1
"""How often a follower looks for new entries while none arrive: the live tail's added delay
at most, for one O(1) read per open stream."""
_ATTEMPTS = 8
"""Searches of a log that keeps changing under the reader before it reads a plain range."""


def check_cursor(cursor: str | None, field: str = "since") -> str | None:
    """A stream id (``<ms>-<n>``) or None; anything else is the caller's mistake (4xx)."""
    if cursor is None or cursor == "":
        return None
    if not _STREAM_ID.fullmatch(cursor):
        raise InvalidError(f"{field}: an event id like 1733000000000-0 expected")
    return cursor


def _order(entry_id: str) -> tuple[int, int]:
    ms, _, n = entry_id.partition("-")
    return int(ms), int(n or 0)


def _iso(ms: int) -> str:
    from service.engine.engine import iso_time  # the engine's one time format

    return iso_time(ms)


def _events(entry_id: str, at_ms: int, actor: str | None, raw: Any) -> list[dict[str, Any]]:
    at = _iso(at_ms)
    events: list[dict[str, Any]] = []
    for item in raw if isinstance(raw, list) else []:
        event = {"id": entry_id, "at": at, **item}
        if "instance" in item and "task" not in item:  # stored without it (lib.lua)
            event["task"] = str(item["instance"]).rsplit("#", 1)[0]
        if actor:
            event["actor"] = actor
        events.append(event)
    return events


def decode_entry(entry_id: str, fields: dict[str, str]) -> list[dict[str, Any]]:
    """One entry of the earlier layout's stream as the events it holds, each with the entry's
    id, time and actor."""
    raw = orjson.loads(fields.get("e", "[]"))
    return _events(entry_id, int(fields.get("at", "0")), fields.get("a"), raw)


EVENT_KEY_NAMES = {
    "t": "type", "g": "trigger", "b": "kwargsBytes", "m": "mode", "i": "instance", "f": "from",
    "c": "action", "s": "status", "d": "delivery", "v": "event",
}  # fmt: skip
"""Event field names, stored as one-letter codes (lib.lua EVENT_KEY_CODE)."""
EVENT_VALUE_NAMES = {
    "C": "configured", "F": "fired", "N": "created", "Z": "finalized", "O": "operator",
    "D": "webhookDelivered", "X": "webhookFailed", "Y": "webhookRetrying", "u": "unstarted",
    "s": "scheduled", "c": "claimed", "r": "running", "f": "finished", "x": "failed",
    "p": "replayed", "k": "skipped", "a": "abandoned",
}  # fmt: skip
"""Values of ``type`` and ``from`` (event kinds, statuses), stored as codes (lib.lua
EVENT_VALUE_CODE)."""


_STATUS_SHAPE = ("instance", "from")
EVENT_SHAPES: dict[str, tuple[str, ...]] = {
    "fired": ("trigger", "kwargsBytes"), "created": ("instance",), "configured": ("mode",),
    "finalized": (),
    **{status: _STATUS_SHAPE for status in (
        "unstarted", "scheduled", "claimed", "running", "finished", "failed", "replayed",
        "skipped", "abandoned",
    )},
}  # fmt: skip
"""The commonest events are stored by position: [kind code, then these fields, trailing absent
ones left out], as text or as JSON arrays (lib.lua log_shaped, log_line); others as objects
with coded names."""


def _expanded(item: dict[str, Any] | list[Any]) -> dict[str, Any]:
    """A stored event with whole names (one stored with whole names, as an entry adopted from
    the earlier layout's stream, stays as it is: no whole name is a code)."""
    event: dict[str, Any] = {}
    if isinstance(item, list):
        kind = EVENT_VALUE_NAMES.get(item[0], item[0])
        event["type"] = kind
        for name, value in zip(EVENT_SHAPES.get(kind, ()), item[1:], strict=False):
            event[name] = EVENT_VALUE_NAMES.get(value, value) if name == "from" else value
        return event
    for key, value in item.items():
        if key in ("t", "f") and isinstance(value, str):
            value = EVENT_VALUE_NAMES.get(value, value)
        event[EVENT_KEY_NAMES.get(key, key)] = value
    return event


_RS, _US = "\x1e", "\x1f"


def _split_line(line: str) -> tuple[str, str]:
    """A stored entry's id, in the stream shape and decimal, and its payload (either layout:
    lib.lua leaves out an id's "-0")."""
    head, separator, payload = line.partition(_RS)
    if separator:
        ms, _, n = head.partition("-")
        return f"{int(ms, 36)}-{int(n, 36) if n else 0}", payload
    head, _, payload = line.partition(" ")
    return (head if "-" in head else head + "-0"), payload


def _entry_id(line: str) -> str:
    return _split_line(line)[0]


def _shaped(text: str) -> list[list[Any]]:
    """Events stored as text (lib.lua log_line) as the arrays ``_expanded`` reads."""
    events: list[list[Any]] = []
    for event in text.split(_RS):
        fields: list[Any] = event.split(_US)
        shape = EVENT_SHAPES.get(EVENT_VALUE_NAMES.get(fields[0], fields[0]), ())
        for position, name in enumerate(shape, 1):
            if name == "kwargsBytes" and position < len(fields):
                fields[position] = int(fields[position])
        events.append(fields)
    return events


def decode_line(line: str) -> tuple[str, list[dict[str, Any]]]:
    """One log entry (lib.lua log_line) as its id and the events it holds."""
    entry_id, payload = _split_line(line)
    decoded: Any = orjson.loads(payload) if payload[:1] in ("[", "{") else _shaped(payload)
    at, actor = _order(entry_id)[0], None
    if isinstance(decoded, dict):
        at, actor = int(decoded.get("at") or at), decoded.get("a")
        decoded = decoded.get("e")
    items = [_expanded(item) for item in decoded if isinstance(item, dict | list) and item]
    return entry_id, _events(entry_id, at, actor, items)


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
        key = self.key(uid)
        try:
            lines = await self._after(key, since, limit + 1)
        except ResponseError as error:
            if "WRONGTYPE" not in str(error):
                raise
            return await self._stream_page(key, since, limit)
        more = len(lines) > limit
        entries = [decode_line(line) for line in lines[:limit]]
        events = [event for _, decoded in entries for event in decoded]
        last = entries[-1][0] if entries else since
        return EventPage(events, last if more else None, last)

    async def _range(self, key: str, start: int, stop: int) -> list[str]:
        found: Any = await self.client.lrange(key, start, stop)
        return list(found)

    async def _at(self, key: str, index: int) -> str | None:
        found: Any = await self.client.lindex(key, index)
        return None if found is None else str(found)

    async def _after(self, key: str, since: str | None, count: int) -> list[str]:
        """Up to ``count`` entries with ids above ``since``, oldest first.

        The first is found by a binary search on ids (LINDEX, O(log n) round trips; one when
        nothing is newer, a follower's usual poll). Scripts append and trim meanwhile, which
        shifts positions: the range read includes the entry before the one found, and the
        search is repeated unless that entry is still at or below ``since`` and the next
        above it (an entry trimmed meanwhile is lost as it would be to a later reader).
        """
        if since is None:
            return await self._range(key, 0, count - 1)
        bound = _order(since)
        for _ in range(_ATTEMPTS):
            newest = await self._at(key, -1)
            if newest is None or _order(_entry_id(newest)) <= bound:
                return []
            length = int(await self.client.llen(key))
            low, high = 0, length - 1  # the answer is in [low, high]: entry high is newer
            while low < high:
                middle = (low + high) // 2
                found = await self._at(key, middle)
                if found is None:
                    break  # trimmed meanwhile: search again
                if _order(_entry_id(found)) <= bound:
                    low = middle + 1
                else:
                    high = middle
            else:
                start = max(low - 1, 0)
                lines = await self._range(key, start, low + count - 1)
                if low == 0:
                    if lines and _order(_entry_id(lines[0])) > bound:
                        return lines[:count]
                    continue
                if (len(lines) >= 2 and _order(_entry_id(lines[0])) <= bound
                        and _order(_entry_id(lines[1])) > bound):  # fmt: skip
                    return lines[1 : count + 1]
        lines = await self._range(key, 0, -1)
        return [line for line in lines if _order(_entry_id(line)) > bound][:count]

    async def _stream_page(self, key: str, since: str | None, limit: int) -> EventPage:
        """A page of a log still in the earlier layout (a stream)."""
        start = f"({since}" if since else "-"
        answer: Any = await self.client.xrange(key, start, "+", count=limit + 1)
        found: list[Any] = list(answer or [])
        more = len(found) > limit
        found = found[:limit]
        events = [event for entry_id, fields in found for event in decode_entry(entry_id, fields)]
        last = found[-1][0] if found else since
        return EventPage(events, last if more else None, last)

    def follower(self, uid: str) -> EventFollower:
        """A reader that waits for new entries (short polls on the shared client)."""
        return EventFollower(self, uid)


class EventFollower:
    """The live tail of one session's log: polls every ``POLL_SECONDS`` until an entry newer
    than the last one seen arrives. Each poll is one short read on the shared pool (two when
    something is new), so a follower holds no connection of its own."""

    def __init__(self, log: EventLog, uid: str) -> None:
        self.log = log
        self.uid = uid

    async def wait(self, after: str | None, block_ms: int) -> EventPage:
        """The entries after ``after`` (None: from the start), waiting up to ``block_ms`` for
        one; an empty page when none arrived."""
        deadline = time.monotonic() + block_ms / 1000
        while True:
            page = await self.log.page(self.uid, after, 100)
            if page.events or page.last != after or time.monotonic() >= deadline:
                return page
            await asyncio.sleep(min(POLL_SECONDS, max(deadline - time.monotonic(), 0)))

    async def aclose(self) -> None:
        """Nothing to release (kept so callers close what they open)."""
