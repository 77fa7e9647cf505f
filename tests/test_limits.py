"""Size limits (issue 14 item 1): refused before any write, with 422 problems naming the limit
and the field; a configure of a big graph stays correct with the linear script."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from redis.asyncio import Redis

from service.engine import Engine, InvalidError, LimitError
from service.engine.limits import Limits
from tests.conftest import unique_prefix

SMALL = Limits(
    max_tasks=5, max_triggers_per_list=3, max_tasks_per_trigger=4, max_instances=6,
    max_open_instances=4,
)  # fmt: skip


@pytest.fixture
async def small(redis_url: str) -> AsyncIterator[Engine]:
    """An engine with tiny limits, so every limit is reached with a few tasks."""
    engine = Engine(
        Redis.from_url(redis_url, decode_responses=True), prefix=unique_prefix(), limits=SMALL
    )
    await engine.load_scripts()
    yield engine
    await engine.aclose()


def tasks(count: int, after: list[str] | None = None, first: int = 0) -> dict[str, object]:
    return {
        "tasks": {f"t{i}": {"after": after or [f"x{i}"], "run": "P"} for i in range(first, count)}
    }


async def version(engine: Engine, uid: str) -> int | None:
    raw = await engine.client.hget(f"{engine.prefix}:{{{uid}}}:meta", "v")
    return None if raw is None else int(raw)


async def test_too_many_tasks_in_one_request_is_refused_before_the_script(small: Engine) -> None:
    with pytest.raises(LimitError) as refused:
        await small.configure("l:1", tasks(6))
    assert refused.value.message.startswith("tasks: 6 tasks")
    assert "TRIGGERS_MAX_TASKS (5)" in refused.value.message
    assert await version(small, "l:1") is None  # nothing written, not even the session


async def test_merges_that_would_pass_the_task_limit_are_refused(small: Engine) -> None:
    await small.configure("l:2", tasks(4))
    await small.configure("l:2", tasks(5, first=3))  # t3 replaced, t4 new: 5 tasks
    before = await version(small, "l:2")
    with pytest.raises(LimitError) as refused:
        await small.configure("l:2", {"tasks": {"t9": {"after": ["a"], "run": "P"}}})
    assert "would hold 6 tasks" in refused.value.message
    assert "TRIGGERS_MAX_TASKS" in refused.value.message
    assert await version(small, "l:2") == before
    config = await small.configure("l:2", tasks(2), replace=True)  # replace counts only itself
    assert list(config.tasks) == ["t0", "t1"]


@pytest.mark.parametrize("field", ["after", "unless"])
async def test_long_after_or_unless_lists_are_refused(small: Engine, field: str) -> None:
    task = {"after": ["a"], "run": "P", field: ["a", "b", "c", "d"]}
    with pytest.raises(LimitError) as refused:
        await small.configure("l:3", {"tasks": {"t": task}})
    assert refused.value.message.startswith(f"tasks.t.{field}: 4 triggers")
    assert "TRIGGERS_MAX_TRIGGERS_PER_LIST (3)" in refused.value.message


async def test_and_every_counts_in_the_after_list(small: Engine) -> None:
    task = {"after": ["a", "b", "c"], "andEvery": "d", "run": "P"}
    with pytest.raises(LimitError, match=r"tasks\.t\.after: 4 triggers"):
        await small.configure("l:4", {"tasks": {"t": task}})


async def test_tasks_per_trigger_in_one_request(small: Engine) -> None:
    with pytest.raises(LimitError) as refused:
        await small.configure("l:5", tasks(5, after=["a"]))
    assert "trigger a concerns 5 tasks" in refused.value.message
    assert "TRIGGERS_MAX_TASKS_PER_TRIGGER (4)" in refused.value.message


async def test_tasks_per_trigger_across_merges_checked_by_the_script(small: Engine) -> None:
    await small.configure("l:6", tasks(4, after=["a"]))
    before = await version(small, "l:6")
    with pytest.raises(LimitError) as refused:
        await small.configure(
            "l:6", {"tasks": {"u": {"after": ["b"], "unless": ["a"], "run": "P"}}}
        )
    assert refused.value.message.startswith("tasks.u.unless: trigger a would concern 5 tasks")
    assert await version(small, "l:6") == before
    # Moving a task off the trigger makes room, in the same request.
    config = await small.configure(
        "l:6",
        {"tasks": {"t0": {"after": ["b"], "run": "P"}, "u": {"after": ["a"], "run": "P"}}},
    )
    assert set(config.tasks) == {"t0", "t1", "t2", "t3", "u"}
    outcome = await small.fire("l:6", "a")
    assert sorted(outcome.scheduled) == ["t1#0", "t2#0", "t3#0", "u#0"]


async def test_fires_past_the_instance_limit_are_refused_before_any_write(small: Engine) -> None:
    uid = "l:7"
    await small.configure(uid, {"tasks": {"p": {"after": [], "andEvery": "page", "run": "P"},
                                          "w": {"after": ["other"], "run": "P"}}})  # fmt: skip
    for _ in range(6):
        await small.fire(uid, "page")
    before = await version(small, uid)
    with pytest.raises(LimitError) as refused:
        await small.fire(uid, "page")
    assert refused.value.message.startswith("instances: the session holds 6 instances")
    assert "TRIGGERS_MAX_INSTANCES (6)" in refused.value.message
    with pytest.raises(LimitError):
        await small.fire(uid, "other")  # would create w#0
    assert await version(small, uid) == before
    assert len(await small.instances(uid)) == 6
    await small.fire(uid, "unused")  # creates nothing: accepted


async def test_fires_past_the_open_instance_limit_are_refused(small: Engine) -> None:
    """Unstarted instances are what every fire of their task's triggers visits: bounded."""
    uid = "l:10"
    await small.configure(uid, {"tasks": {"w": {"after": ["b"], "andEvery": "page", "run": "P"}}})
    for _ in range(4):
        await small.fire(uid, "page")
    before = await version(small, uid)
    with pytest.raises(LimitError) as refused:
        await small.fire(uid, "page")
    assert "holds 4 unstarted instances" in refused.value.message
    assert "TRIGGERS_MAX_OPEN_INSTANCES (4)" in refused.value.message
    assert await version(small, uid) == before
    outcome = await small.fire(uid, "b")  # creates nothing: runs all four
    assert outcome.scheduled == ["w#0", "w#1", "w#2", "w#3"]
    await small.fire(uid, "page")  # room again


async def test_replays_and_retries_past_the_instance_limit_are_refused(small: Engine) -> None:
    uid = "l:8"
    await small.configure(uid, {"tasks": {"p": {"after": [], "andEvery": "page", "run": "P"}}})
    for _ in range(6):
        await small.fire(uid, "page")
    first = await small.claim(uid, "p#0")
    assert first.token is not None
    with pytest.raises(LimitError, match="TRIGGERS_MAX_INSTANCES"):
        await small.retry(uid, "p#0", first.token, cooldown=0)
    await small.fail(uid, "p#0", first.token, "E", "boom")
    with pytest.raises(LimitError, match="TRIGGERS_MAX_INSTANCES"):
        await small.replay(uid, "p#0")
    assert (await small.instance(uid, "p#0")).status == "failed"


async def test_limit_error_is_an_invalid_error() -> None:
    """Callers that handle InvalidError (the worker fails the instance with the message) keep
    working for limits."""
    assert issubclass(LimitError, InvalidError)


async def test_big_graphs_are_configured_correctly(redis_url: str) -> None:
    """A 10,000-task andEvery chain (about 15 s of Redis before the script was linear) and
    10,000 tasks on one trigger are configured, a ring closed at the far end of the chain is
    still found, and a replace drops every index entry of the tasks it removes."""
    engine = Engine(
        Redis.from_url(redis_url, decode_responses=True),
        prefix=unique_prefix(),
        limits=Limits(max_tasks=0, max_tasks_per_trigger=0),
    )
    await engine.load_scripts()
    try:
        size = 10_000
        chain = {
            f"c{i}": {"after": ["go"] if i == 0 else [], "andEvery": f"c{i - 1}", "run": "P"}
            for i in range(size)
        }
        chain["c0"] = {"after": ["go"], "run": "P"}
        config = await engine.configure("l:9", {"tasks": chain})
        assert len(config.tasks) == size
        ring = {"c0": {"after": [], "andEvery": f"c{size - 1}", "run": "P"}}
        with pytest.raises(InvalidError, match=r"tasks.c0.andEvery: ring"):
            await engine.configure("l:9", {"tasks": ring})
        wide = {f"w{i}": {"after": ["a"], "run": "P"} for i in range(size)}
        await engine.configure("l:9", {"tasks": wide}, replace=True)
        defs = await engine.client.hgetall(f"{engine.prefix}:{{l:9}}:defs")
        # the index and its mark (kept past lib.lua SCAN_TASKS tasks)
        assert {field for field in defs if field.startswith("##")} == {"##", "##a"}
        assert (await engine.fire("l:9", "go")).scheduled == []
    finally:
        await engine.aclose()


async def test_api_answers_limit_exceeded_naming_the_limit_and_field(
    api: httpx.AsyncClient,
) -> None:
    """The service's defaults (500 tasks) refuse 501 tasks with 422 limit-exceeded."""
    body = {"tasks": {f"t{i}": {"after": [f"x{i}"], "run": "P"} for i in range(501)}}
    response = await api.put("/sessions/limits:1/config", json=body)
    assert response.status_code == 422
    problem = response.json()
    assert problem["type"] == "/problems/limit-exceeded"
    assert "TRIGGERS_MAX_TASKS (500)" in problem["detail"]
    assert problem["errors"][0]["field"] == "body.tasks"
    assert (await api.get("/sessions/limits:1")).status_code == 404
    wide = {"tasks": {"t": {"after": [f"x{i}" for i in range(17)], "run": "P"}}}
    response = await api.patch("/sessions/limits:1/config", json=wide)
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "body.tasks.t.after"
    assert "TRIGGERS_MAX_TRIGGERS_PER_LIST (16)" in response.json()["detail"]
