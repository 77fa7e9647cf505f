"""Loading and running the Lua scripts: one file per state change plus includes/lib.lua.

Redis has no include mechanism, so each script is sent as ``lib.lua`` followed by its own body
(BullMQ does the same at build time). Scripts are loaded once with SCRIPT LOAD (on every primary
of a cluster) and run with EVALSHA; when Redis answers NOSCRIPT (it restarted, or failed over
to a node that never saw the script) the script is loaded again and the call repeated, once.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from importlib import resources
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import NoScriptError, ResponseError

from service.engine.errors import from_response_error
from service.metrics import observe_script

RedisClient = Redis | RedisCluster

SCRIPT_NAMES = (
    "configure",
    "fire",
    "claim",
    "renewLease",
    "complete",
    "fail",
    "retry",
    "replay",
    "skip",
    "setStatus",
    "setMetadata",
    "finalizeIfReady",
    "ackDispatched",
    "delete",
    "peekInstance",
    "readConfig",
    "readSession",
    "sweepSession",
    "createDelivery",
    "beginAttempt",
    "finishAttempt",
    "redeliver",
)
STANDALONE_SCRIPT_NAMES = ("rescorePending",)
"""Scripts that are not about one session: no library, their own keys."""


@dataclass(frozen=True)
class Script:
    name: str
    source: str
    sha: str


def _read(relative: str) -> str:
    return resources.files("service.engine").joinpath("lua", relative).read_text("utf-8")


def load_sources() -> dict[str, Script]:
    """Every script's full source (library + body) and its SHA1, keyed by name."""
    library = _read("includes/lib.lua")
    scripts = {}
    for name in SCRIPT_NAMES:
        source = f"{library}\n-- ===== {name}.lua =====\n{_read(name + '.lua')}"
        sha = hashlib.sha1(source.encode("utf-8")).hexdigest()
        scripts[name] = Script(name, source, sha)
    for name in STANDALONE_SCRIPT_NAMES:
        source = _read(f"standalone/{name}.lua")
        scripts[name] = Script(name, source, hashlib.sha1(source.encode("utf-8")).hexdigest())
    return scripts


class ScriptRunner:
    """Runs the engine's scripts on one client (standalone Redis or Redis Cluster)."""

    def __init__(self, client: RedisClient) -> None:
        self.client = client
        self.scripts = load_sources()

    async def load_all(self) -> None:
        """SCRIPT LOAD every script (the cluster client sends it to every primary)."""
        for script in self.scripts.values():
            await self.client.script_load(script.source)

    async def loaded(self) -> bool:
        """Whether Redis (every primary, on a cluster) knows every script."""
        found = await self.client.script_exists(*(s.sha for s in self.scripts.values()))
        return all(found)

    async def run(
        self,
        name: str,
        keys: list[str],
        args: list[str | int | float],
        *,
        mark: Mark | None = None,
        touch: IndexTouch | None = None,
    ) -> Any:
        """EVALSHA the script; reload on NOSCRIPT; turn error replies into typed errors.

        ``mark``: first mark the session in the global pending index (see ``Mark``), so that
        the sweeper finds it even if this process dies right after the script. On a standalone
        Redis the mark and the script go in one pipeline (one round trip, in order on one
        connection); a cluster routes them to different nodes, so the mark is awaited first.
        Either way the mark is applied before the script runs. ``touch``: likewise, the
        session's entry in the session index (one ZADD in the same pipeline).
        """
        script = self.scripts[name]
        try:
            try:
                started = time.perf_counter()
                answer = await self._call(script, keys, args, mark, touch)
                observe_script(name, time.perf_counter() - started)
                return answer
            except NoScriptError:
                await self.client.script_load(script.source)
                return await self._call(script, keys, args, mark, touch)
        except NoScriptError:
            raise
        except ResponseError as error:
            raise from_response_error(error) from None

    async def mark(self, mark: Mark | IndexTouch, *more: Mark | IndexTouch) -> None:
        """Apply ``mark`` on its own (both commands in the index's slot: one round trip)."""
        await self._send([command for item in (mark, *more) for command in item.commands()])

    async def mark_many(self, marks: list[Mark]) -> None:
        """Apply many marks of one kind (one index, one marks hash) as two commands: the
        earliest score per session (``ZADD LT``), the latest mark time per session."""
        if not marks:
            return
        scores: dict[str, int] = {}
        times: dict[str, int] = {}
        for mark in marks:
            if mark.uid not in scores or mark.score < scores[mark.uid]:
                scores[mark.uid] = mark.score
            times[mark.uid] = max(mark.at, times.get(mark.uid, 0))
        first = marks[0]
        zadd: list[Any] = ["ZADD", first.index, "LT"]
        hset: list[Any] = ["HSET", first.marks]
        for uid, score in scores.items():
            zadd += [score, uid]
            hset += [uid, times[uid]]
        await self._send([tuple(zadd), tuple(hset)])

    async def _call(
        self,
        script: Script,
        keys: list[str],
        args: list[str | int | float],
        mark: Mark | None,
        touch: IndexTouch | None,
    ) -> Any:
        before = [
            command for item in (mark, touch) if item is not None for command in item.commands()
        ]
        if not before:  # one command: redis-py's own path costs the same (bench/engine.py)
            return await self.client.evalsha(script.sha, len(keys), *keys, *args)
        if isinstance(self.client, RedisCluster):
            await self._send(before)
            return await self.client.evalsha(script.sha, len(keys), *keys, *args)
        return (await self._send([*before, ("EVALSHA", script.sha, len(keys), *keys, *args)]))[-1]

    async def _send(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        """Send ``commands`` in order in one round trip; their replies, or the first error.

        Standalone: written at once on one pooled connection and the replies read back, without
        redis-py's pipeline object (its per-command bookkeeping, response callbacks and
        observability hooks were a third of a fire's client CPU, bench/engine.py; none of our
        replies needs a callback). Every reply is read before an error is raised, so the
        connection stays in step; a connection interrupted mid-exchange (an error, a cancelled
        request) is closed, never reused. Nothing is ever re-sent. Cluster: a cluster pipeline
        (it routes each command to its node).
        """
        if isinstance(self.client, RedisCluster):
            pipe: Any = self.client.pipeline()
            for command in commands:
                pipe.execute_command(*command)
            return list(await pipe.execute())
        pool: Any = self.client.connection_pool
        connection: Any = await pool.get_connection()
        try:
            await connection.send_packed_command(connection.pack_commands(commands))
            replies: list[Any] = []
            for _ in commands:
                try:
                    replies.append(await connection.read_response())
                except ResponseError as error:
                    replies.append(error)
        except BaseException:
            await connection.disconnect(nowait=True)
            raise
        finally:
            await pool.release(connection)
        for reply in replies:
            if isinstance(reply, ResponseError):
                raise reply
        return replies


@dataclass(frozen=True)
class Mark:
    """A session marked in the global pending index: it must be visited by ``score`` (ms) at
    the latest. ``ZADD LT`` never pushes an earlier need back; ``marks`` (the pre- or the
    post-marks hash) keeps the time of the latest mark, which tells the sweeper that a change
    may still be on its way (lua/standalone/rescorePending.lua)."""

    index: str
    marks: str
    uid: str
    score: int
    at: int

    def commands(self) -> list[tuple[Any, ...]]:
        return [("ZADD", self.index, "LT", self.score, self.uid),
                ("HSET", self.marks, self.uid, self.at)]  # fmt: skip


@dataclass(frozen=True)
class IndexTouch:
    """A session's entry in the session index (keys.sessions_index_key) moved to ``at`` (ms):
    one ZADD next to the change's script. GT: a slower caller never moves it back."""

    index: str
    uid: str
    at: int

    def commands(self) -> list[tuple[Any, ...]]:
        return [("ZADD", self.index, "GT", self.at, self.uid)]
