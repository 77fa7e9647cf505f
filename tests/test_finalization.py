"""Finalization under concurrency, and a plug-in manager's hooks seen through the API."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from redis.asyncio import Redis

from service.engine import Engine
from service.registry import MANAGERS_GROUP, managers
from tests.conftest import LiveServer, api_settings, unique_prefix
from tests.support import installed_plugin


async def test_twelve_tasks_completing_at_once_finalize_once(any_engine: Engine) -> None:
    engine = any_engine
    tasks = {f"t{n}": {"after": ["start"], "run": "N"} for n in range(12)}
    tasks["t_fin"] = {"after": ["sessionFinalized"], "run": "N"}
    await engine.configure("fin:1", {"tasks": tasks})
    await engine.fire("fin:1", "start")
    claims = await asyncio.gather(*(engine.claim("fin:1", f"t{n}#0") for n in range(12)))
    outcomes = await asyncio.gather(*(
        engine.complete("fin:1", f"t{n}#0", claim.token or "") for n, claim in enumerate(claims)
    ))  # fmt: skip
    assert sum(outcome.finalized for outcome in outcomes) == 1
    finals = [f for o in outcomes for f in o.fires if f.trigger == "sessionFinalized"]
    assert [f.scheduled for f in finals] == [["t_fin#0"]]
    snapshot = await engine.snapshot("fin:1")
    assert snapshot.finalized and snapshot.finalizedAt is not None
    assert [n for n in snapshot.instances if n.startswith("t_fin")] == ["t_fin#0"]


HOOKS_PLUGIN = """
from service.managers import FinalizingManager

CALLS = []


class RecordingManager(FinalizingManager):
    key = "recording"

    async def after_fire(self, uid, trigger, scheduled):
        CALLS.append(("fire", uid, trigger, list(scheduled)))

    async def after_replay(self, uid, parent):
        CALLS.append(("replay", uid, parent.name, parent.status))

    async def after_skip(self, uid, instance, cascaded):
        CALLS.append(("skip", uid, instance.name, cascaded))
"""


@pytest.fixture
def recording_manager(tmp_path: Path) -> Iterator[None]:
    """Installed as a plug-in distribution; the service's registry, already read by earlier
    tests in this process, reads its entry points again (a deployment installs plug-ins before
    it starts)."""
    entry = "recording = hooks_plugin:RecordingManager"
    with installed_plugin(tmp_path, "hooks_plugin", HOOKS_PLUGIN, MANAGERS_GROUP, entry):
        managers.refresh()
        yield
    managers.refresh()


async def test_a_plug_in_manager_gets_its_hooks_in_the_original_order(
    recording_manager: None, redis_url: str
) -> None:
    import hooks_plugin  # type: ignore[import-not-found]

    prefix = unique_prefix()
    engine = Engine(Redis.from_url(redis_url, decode_responses=True), prefix=prefix)
    settings = api_settings(redis_url, key_prefix=prefix, manager="recording")
    with LiveServer(settings) as server:
        async with httpx.AsyncClient(base_url=server.url) as api:
            config = {"tasks": {"t_f": {"after": [], "andEvery": "fail", "run": "X"},
                                "t_b": {"after": ["t_f"], "run": "P"}}}  # fmt: skip
            await api.put("/sessions/h:1/config", json=config)
            await api.post("/sessions/h:1/fire", json={"trigger": "fail"})
            claim = await engine.claim("h:1", "t_f#0")
            await engine.fail("h:1", "t_f#0", claim.token or "", "builtins.RuntimeError", "boom")
            await api.post("/sessions/h:1/instances/t_f%230/replay")
            claim = await engine.claim("h:1", "t_f#1")
            await engine.fail("h:1", "t_f#1", claim.token or "", "builtins.RuntimeError", "boom")
            await api.post("/sessions/h:1/instances/t_f%231/skip",
                           json={"cascade": True, "result": {"r": 1}})  # fmt: skip
    await engine.aclose()
    assert hooks_plugin.CALLS == [
        ("fire", "h:1", "fail", ["t_f#0"]),
        ("replay", "h:1", "t_f#0", "replayed"),  # J2: the parent, not the clone
        ("fire", "h:1", "t_f", ["t_b#0"]),  # J3: the cascade's post-fire comes first...
        ("skip", "h:1", "t_f#1", True),  # ...then post-skip
    ]


async def test_a_configured_session_where_nothing_fired_is_not_finalized(
    any_engine: Engine,
) -> None:
    engine = any_engine
    await engine.configure("fin:2", {"tasks": {"t": {"after": ["a"], "run": "N"},
                                               "t_fin": {"after": ["sessionFinalized"],
                                                         "run": "N"}}})  # fmt: skip
    outcome = await engine.finalize_if_ready("fin:2")
    assert outcome.finalized is False  # t has no instance yet: unresolved, not waiting
    assert (await engine.snapshot("fin:2")).finalized is False


def test_storage_and_manager_are_chosen_by_key(redis_url: str) -> None:
    from service.factory import build_engine
    from service.settings import Settings

    engine = build_engine(Settings(storage="redis", manager="default"), redis_url)
    assert type(engine) is Engine and engine.finalize is False
    with pytest.raises(LookupError):
        build_engine(Settings(storage="nope"), redis_url)
