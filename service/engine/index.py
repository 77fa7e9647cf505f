"""The session index: which sessions exist, newest change first, without scanning the keyspace.

Placement: one sorted set, ``<prefix>:sessions:{sessions}`` (uid -> time of its latest change,
ms), on the node of its own hash tag. Scripts never touch it (a script may only touch its
session's slot); the engine adds ``ZADD GT`` to the pipeline that sends a changing script
(``scripts.IndexTouch``): on a standalone Redis one extra command in the same round trip, on a
cluster one more command to that node, sent with the pending mark before the script.

Reads filter in Python: by the caller's namespace prefixes and the asked prefix, and by status
(``finalized`` is read from each candidate's meta hash, in one pipeline per batch). Entries of
sessions that expired or were deleted are dropped from the answer and, once they are older than
a minute (so a session being created right now is never dropped), from the index.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from service.engine.engine import iso_time
from service.engine.errors import InvalidError
from service.engine.keys import session_keys, sessions_index_key, updated_ms
from service.engine.scripts import RedisClient

Status = Literal["active", "finalized"]
MAX_EXAMINED = 2000
"""Index entries one request examines at most: a filter that matches little returns a short
page with a ``next`` cursor rather than walking the whole index."""
STALE_MS = 60_000
_CURSOR = re.compile(r"(?P<score>\d{1,20}):(?P<uid>.+)")


@dataclass(frozen=True)
class IndexedSession:
    uid: str
    updated: str
    finalized: bool


@dataclass(frozen=True)
class SessionPage:
    sessions: list[IndexedSession]
    next: str | None


def _parse_cursor(cursor: str | None) -> tuple[int, str] | None:
    if not cursor:
        return None
    found = _CURSOR.fullmatch(cursor)
    if not found:
        raise InvalidError("cursor: a cursor from a previous page's next expected")
    return int(found["score"]), found["uid"]


class SessionIndex:
    """The sessions under one key prefix, newest change first."""

    def __init__(self, client: RedisClient, prefix: str) -> None:
        self.client = client
        self.prefix = prefix
        self.key = sessions_index_key(prefix)

    async def page(
        self,
        *,
        allowed: Sequence[str],
        prefix: str = "",
        status: Status | None = None,
        cursor: str | None = None,
        limit: int = 50,
    ) -> SessionPage:
        """``allowed``: the caller's key prefixes (empty: every session)."""
        after = _parse_cursor(cursor)
        chosen: list[IndexedSession] = []
        examined = 0
        last: tuple[int, str] | None = after
        exhausted = False
        while len(chosen) < limit and examined < MAX_EXAMINED:
            batch = await self._batch(last, min(max(limit * 2, 50), MAX_EXAMINED - examined))
            if not batch:
                exhausted = True
                break
            examined += len(batch)
            candidates = [
                (uid, score) for uid, score in batch if self._wanted(uid, allowed, prefix)
            ]
            metas = await self._metas([uid for uid, _ in candidates])
            decided = {uid: meta for (uid, _), meta in zip(candidates, metas, strict=True)}
            for uid, score in batch:
                last = (score, uid)
                meta = decided.get(uid)
                if meta is None:
                    continue
                if meta[0] is None:
                    await self._forget(uid, score)
                    continue
                finalized = meta[1] == "1"
                if status is None or (status == "finalized") == finalized:
                    chosen.append(IndexedSession(uid, iso_time(meta[0]), finalized))
                    if len(chosen) == limit:
                        break
        more = not exhausted and last is not None and await self._batch(last, 1) != []
        return SessionPage(chosen, f"{last[0]}:{last[1]}" if more and last else None)

    @staticmethod
    def _wanted(uid: str, allowed: Sequence[str], prefix: str) -> bool:
        if allowed and not any(uid.startswith(p) for p in allowed):
            return False
        return uid.startswith(prefix)

    async def _batch(self, after: tuple[int, str] | None, count: int) -> list[tuple[str, int]]:
        """Entries after ``after`` in newest-first order (ties: reverse UID order, as Redis)."""
        top: int | str = "+inf" if after is None else after[0]
        found: list[Any] = await self.client.zrevrangebyscore(
            self.key, top, "-inf", start=0, num=count + (0 if after is None else 64),
            withscores=True,
        )  # fmt: skip
        entries = [(str(uid), int(score)) for uid, score in found]
        if after is not None:
            entries = [(u, s) for u, s in entries if s < after[0] or u < after[1]]
            if len(entries) < count and len(found) == count + 64:
                # many ties at one millisecond: skip past them by score
                lower: list[Any] = await self.client.zrevrangebyscore(
                    self.key, f"({after[0]}", "-inf", start=0, num=count, withscores=True
                )
                entries = [(str(uid), int(score)) for uid, score in lower]
        return entries[:count]

    async def _metas(self, uids: list[str]) -> list[tuple[int | None, str | None]]:
        """Each session's updated time (None: it no longer exists) and finalized field."""
        if not uids:
            return []
        pipe: Any = self.client.pipeline()
        for uid in uids:  # "updated": the earlier layout's name (keys.py SESSION_FIELDS)
            pipe.hmget(session_keys(uid, self.prefix)[0], "u", "updated", "finalized")
        answers = await pipe.execute()
        return [(updated_ms(a[0], a[1]), a[2]) for a in answers]

    async def _forget(self, uid: str, score: int) -> None:
        """Drop the entry of a session that no longer exists, unless it is recent."""
        if score < time.time() * 1000 - STALE_MS:
            await self.client.zrem(self.key, uid)

    async def forget(self, uid: str) -> None:
        """A deleted session leaves the index at once."""
        await self.client.zrem(self.key, uid)
