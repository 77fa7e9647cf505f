"""Loading and running the Lua scripts: one file per state change plus includes/lib.lua.

Redis has no include mechanism, so each script is sent as ``lib.lua`` followed by its own body
(BullMQ does the same at build time). Scripts are loaded once with SCRIPT LOAD (on every primary
of a cluster) and run with EVALSHA; when Redis answers NOSCRIPT (it restarted, or failed over
to a node that never saw the script) the script is loaded again and the call repeated, once.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import NoScriptError, ResponseError

from service.engine.errors import from_response_error

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
    "readInstances",
    "readUnresolved",
)


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

    async def run(self, name: str, keys: list[str], args: list[str | int | float]) -> Any:
        """EVALSHA the script; reload on NOSCRIPT; turn error replies into typed errors."""
        script = self.scripts[name]
        try:
            try:
                return await self.client.evalsha(script.sha, len(keys), *keys, *args)
            except NoScriptError:
                await self.client.script_load(script.source)
                return await self.client.evalsha(script.sha, len(keys), *keys, *args)
        except NoScriptError:
            raise
        except ResponseError as error:
            raise from_response_error(error) from None
