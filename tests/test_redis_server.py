"""The embedded Redis launcher, script (re)loading, and the cluster key layout."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis
from redis.asyncio import Redis

from service.engine import Engine
from service.engine.keys import session_keys
from service.engine.scripts import SCRIPT_NAMES, STANDALONE_SCRIPT_NAMES, load_sources
from service.redis_server import RedisClusterServer, RedisServer, find_redis_server


def test_finds_a_redis_server_binary() -> None:
    assert Path(find_redis_server()).exists()


def test_server_starts_answers_and_stops(tmp_path: Path) -> None:
    server = RedisServer(data_dir=tmp_path / "data").start()
    client = server.client()
    assert client.ping()
    assert client.config_get("maxmemory-policy")["maxmemory-policy"] == "noeviction"
    client.close()
    process = server.process
    server.stop()
    assert process is not None and process.poll() is not None
    assert (tmp_path / "data").exists()  # a folder we were given is ours to keep


def test_temporary_folder_is_removed_on_stop() -> None:
    server = RedisServer().start()
    folder = server.data_dir
    server.stop()
    assert not folder.exists()


async def test_state_and_scripts_survive_a_restart_with_the_append_only_file(
    tmp_path: Path,
) -> None:
    """The embedded mode's promise: sessions survive a restart, and the engine reloads its
    scripts when the new server answers NOSCRIPT."""
    port = None
    with RedisServer(data_dir=tmp_path, appendonly=True) as server:
        port = server.port
        engine = Engine(Redis.from_url(server.url, decode_responses=True))
        await engine.load_scripts()
        await engine.configure("s:1", {"tasks": {"t": {"after": ["a", "b"], "run": "P"}}})
        await engine.fire("s:1", "a", {"x": 1})
        await engine.aclose()
    with RedisServer(data_dir=tmp_path, appendonly=True, port=port) as server:
        client = Redis.from_url(server.url, decode_responses=True)
        engine = Engine(client)  # scripts deliberately not loaded: the NOSCRIPT path
        await client.script_flush()  # Redis 6 replays SCRIPT LOAD from the AOF; Redis 7 does not
        assert await client.script_exists(load_sources()["fire"].sha) == [False]
        outcome = await engine.fire("s:1", "b", {"y": 2})
        assert outcome.scheduled == ["t#0"]
        instance = await engine.instance("s:1", "t#0")
        assert instance.kwargs == {"a": {"x": 1}, "b": {"y": 2}}
        await engine.aclose()


async def test_script_flush_is_survived(engine: Engine) -> None:
    await engine.configure("s:2", {"tasks": {"t": {"after": ["a"], "run": "P"}}})
    await engine.client.script_flush()
    outcome = await engine.fire("s:2", "a")
    assert outcome.scheduled == ["t#0"]


def test_every_script_loads_with_the_shared_library() -> None:
    sources = load_sources()
    assert set(sources) == set(SCRIPT_NAMES) | set(STANDALONE_SCRIPT_NAMES)
    for name in SCRIPT_NAMES:
        assert "local K = {" in sources[name].source


def test_scripts_build_no_key_names() -> None:
    """Every redis.call names its key through K (KEYS), never a string built in Lua: that is
    what keeps the scripts valid on Redis Cluster."""
    sources = load_sources()
    for name in SCRIPT_NAMES:
        script = sources[name]
        body = script.source.split(f"===== {name}.lua =====", 1)[1]
        for line in body.splitlines():
            stripped = line.strip()
            if "redis.call(" not in stripped or stripped.startswith("--"):
                continue
            call = stripped.split("redis.call(", 1)[1]
            command, _, rest = call.partition(",")
            if command.strip("'\"").upper() in {"TIME"}:
                continue
            first_arg = rest.strip()
            allowed = ("K.", "KEYS[", "key,")  # sweepSession's helper takes K.outbox/K.leases
            assert first_arg.startswith(allowed), f"{name}.lua: {stripped}"


def test_all_keys_of_a_session_share_one_cluster_slot(redis_cluster: RedisClusterServer) -> None:
    client = redis.RedisCluster.from_url(redis_cluster.url)
    slots = {client.keyslot(key) for key in session_keys("applicant:123")}
    assert len(slots) == 1
    client.close()


def test_session_uids_with_braces_are_refused() -> None:
    with pytest.raises(ValueError):
        session_keys("a{b}")
