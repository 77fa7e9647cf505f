"""Loading and running the Lua scripts: one file per state change plus includes/lib.lua.

Redis has no include mechanism, so each script is sent as the parts of ``lib.lua`` it uses
followed by its own body (BullMQ does the same at build time; ``LuaLibrary``). Scripts are
loaded once with SCRIPT LOAD (on every primary of a cluster) and run with EVALSHA; when Redis
answers NOSCRIPT (it restarted, or failed over to a node that never saw the script) the script
is loaded again and the call repeated, once.
"""

from __future__ import annotations

import hashlib
import re
import time
from dataclasses import dataclass
from importlib import resources
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import NoScriptError, ResponseError

from service.engine.connection import pooled_exchange
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
    """Every script's full source (the library parts it uses + body) and its SHA1, by name."""
    library = LuaLibrary(_read("includes/lib.lua"))
    scripts = {}
    for name in SCRIPT_NAMES:
        body = _read(name + ".lua")
        source = f"{library.needed_by(body)}\n-- ===== {name}.lua =====\n{body}"
        sha = hashlib.sha1(source.encode("utf-8")).hexdigest()
        scripts[name] = Script(name, source, sha)
    for name in STANDALONE_SCRIPT_NAMES:
        source = _read(f"standalone/{name}.lua")
        scripts[name] = Script(name, source, hashlib.sha1(source.encode("utf-8")).hexdigest())
    return scripts


_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_DEFINES = re.compile(r"local\s+function\s+([A-Za-z_]\w*)|local\s+([A-Za-z_][\w\s,]*?)\s*=")
_LONG_COMMENT = re.compile(r"--\[(=*)\[.*?\]\1\]", re.DOTALL)


def _code_only(lua: str) -> str:
    """Lua text without comments and string literals (what remains names what it uses)."""
    lua = _LONG_COMMENT.sub(" ", lua)
    out, i, n = [], 0, len(lua)
    while i < n:
        char = lua[i]
        if char in "'\"":
            i += 1
            while i < n and lua[i] != char:
                i += 2 if lua[i] == "\\" else 1
            out.append(" ")
        elif lua.startswith("--", i):
            while i < n and lua[i] != "\n":
                i += 1
        else:
            out.append(char)
        i += 1
    return "".join(out)


class LuaLibrary:
    """includes/lib.lua cut into its top-level chunks, so that a script carries only the
    chunks it uses, transitively, in their original order: Redis runs a script's whole text on
    every call, so each unused ``local function`` and table was a closure or table built for
    nothing (the shared preamble cost ~12 µs per call, issue 11).

    A chunk starts at a line that begins in column 0 (after the comment lines just above it)
    and runs until the next such line; ``end``, ``}`` and indented lines continue it. A chunk
    defines the names of its ``local function NAME`` or ``local NAME[, NAME] =``; one that
    defines nothing (``pcall(redis.replicate_commands)``) is always kept. Block comments
    (the library's header) are left out.
    """

    def __init__(self, text: str) -> None:
        self.chunks: list[tuple[str, set[str], set[str]]] = []
        for chunk in self._split(_LONG_COMMENT.sub("", text)):
            code = _code_only(chunk)
            defined: set[str] = set()
            first = code.strip().splitlines()[0] if code.strip() else ""
            found = _DEFINES.match(first)
            if found:
                names = found.group(1) or found.group(2)
                defined = {part.strip() for part in names.split(",")}
            self.chunks.append((chunk, defined, set(_IDENTIFIER.findall(code)) - defined))

    @staticmethod
    def _split(text: str) -> list[str]:
        chunks: list[str] = []
        pending: list[str] = []  # comment and blank lines waiting for the chunk they precede
        for line in text.splitlines():
            starts = line[:1] not in ("", " ", "\t", "-") and not line.startswith(("end", "}"))
            if starts or not chunks:
                chunks.append("\n".join([*pending, line]))
                pending = []
            elif line.startswith("--") or not line.strip():
                pending.append(line)
            else:
                chunks[-1] += "\n" + "\n".join([*pending, line])
                pending = []
        return [chunk for chunk in chunks if _code_only(chunk).strip()]

    def needed_by(self, body: str) -> str:
        """The chunks ``body`` uses, directly or through the chunks it uses, in order."""
        wanted = set(_IDENTIFIER.findall(_code_only(body)))
        keep = [not defined for _, defined, _ in self.chunks]
        for i, (_, _, uses) in enumerate(self.chunks):
            if keep[i]:
                wanted |= uses
        changed = True
        while changed:
            changed = False
            for i in reversed(range(len(self.chunks))):
                _, defined, uses = self.chunks[i]
                if not keep[i] and defined & wanted:
                    keep[i] = changed = True
                    wanted |= uses
        return "\n".join(chunk for i, (chunk, _, _) in enumerate(self.chunks) if keep[i])


class ScriptRunner:
    """Runs the engine's scripts on one client (standalone Redis or Redis Cluster)."""

    def __init__(self, client: RedisClient) -> None:
        self.client = client
        self.scripts = load_sources()
        # asked once: isinstance against redis-py's cluster class (a Protocol's subclass) is
        # an ABC check of several microseconds, and was asked twice per script call
        self._cluster = isinstance(client, RedisCluster)

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
        commands = script_commands(script, keys, args, mark, touch)
        if len(commands) == 1:  # one command: redis-py's own path costs the same (bench/engine.py)
            return await self.client.evalsha(script.sha, len(keys), *keys, *args)
        if self._cluster:
            await self._send(commands[:-1])
            return await self.client.evalsha(script.sha, len(keys), *keys, *args)
        return (await self._send(commands))[-1]

    async def _send(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        """Send ``commands`` in order in one round trip; their replies, or the first error.

        Standalone: written at once on one pooled connection and the replies read back, without
        redis-py's pipeline object (its per-command bookkeeping, response callbacks and
        observability hooks were a third of a fire's client CPU, bench/engine.py; none of our
        replies needs a callback), within one socket timeout (connection.exchange). Every reply
        is read before an error is raised, so the connection stays in step; a connection
        interrupted mid-exchange (an error, a cancelled request) is closed, never reused.
        Nothing is ever re-sent. Cluster: a cluster pipeline (it routes each command to its
        node).
        """
        if self._cluster:
            pipe: Any = self.client.pipeline()
            for command in commands:
                pipe.execute_command(*command)
            return list(await pipe.execute())
        client: Any = self.client
        return raise_first_error(await pooled_exchange(client, commands))


def script_commands(
    script: Script,
    keys: list[str],
    args: list[str | int | float],
    mark: Mark | None,
    touch: IndexTouch | None,
) -> list[tuple[Any, ...]]:
    """What one script call sends, in order: its pre-mark, its index touch, its EVALSHA."""
    commands = [
        command for item in (mark, touch) if item is not None for command in item.commands()
    ]
    commands.append(("EVALSHA", script.sha, len(keys), *keys, *args))
    return commands


def raise_first_error(replies: list[Any]) -> list[Any]:
    """``replies`` of one exchange (error replies in place), or the first error among them."""
    for reply in replies:
        if isinstance(reply, ResponseError):
            raise reply
    return replies


@dataclass(slots=True)
class Mark:
    """A session marked in the global pending index: it must be visited by ``score`` (ms) at
    the latest. ``ZADD LT`` never pushes an earlier need back; ``marks`` (the pre- or the
    post-marks hash) keeps the time of the latest mark, which tells the sweeper that a change
    may still be on its way (lua/standalone/rescorePending.lua). (Not frozen, as ``IndexTouch``:
    built on every change, where a frozen dataclass's ``__init__`` cost several times more.)"""

    index: str
    marks: str
    uid: str
    score: int
    at: int

    def commands(self) -> list[tuple[Any, ...]]:
        return [("ZADD", self.index, "LT", self.score, self.uid),
                ("HSET", self.marks, self.uid, self.at)]  # fmt: skip


@dataclass(slots=True)
class IndexTouch:
    """A session's entry in the session index (keys.sessions_index_key) moved to ``at`` (ms):
    one ZADD next to the change's script. GT: a slower caller never moves it back."""

    index: str
    uid: str
    at: int

    def commands(self) -> list[tuple[Any, ...]]:
        return [("ZADD", self.index, "GT", self.at, self.uid)]
