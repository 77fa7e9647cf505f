"""Big sessions (issue 14 items 2 and 12): no `unpack` of unbounded lists in any script, reads
in pages, instance listings with cursor/limit/next.

Lua's unpack() fails past about 8,000 values ("too many results to unpack"), so the sizes here
are just past that. The defaults of the limits refuse such configurations (test_limits.py); an
operator may raise them, so the scripts must chunk whatever the limits allow: these tests use
an engine without limits.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from service.engine import Engine
from service.engine.limits import Limits
from service.settings import Settings
from tests.conftest import LiveServer, api_settings, engine_on, unique_prefix

PAST_UNPACK = 8_001
NO_LIMITS = Limits(0, 0, 0, 0, 0)


@pytest.fixture
async def unlimited(redis_url: str) -> AsyncIterator[Engine]:
    engine = Engine(
        Redis.from_url(redis_url, decode_responses=True), prefix=unique_prefix(), limits=NO_LIMITS
    )
    await engine.load_scripts()
    yield engine
    await engine.aclose()


async def in_batches(count: int, call: Callable[[int], Awaitable[Any]], size: int = 50) -> None:
    """``call(0..count-1)``, ``size`` at a time (below the client's connection pool)."""
    for first in range(0, count, size):
        await asyncio.gather(*(call(i) for i in range(first, min(count, first + size))))


async def test_a_trigger_used_by_more_than_8000_tasks(unlimited: Engine) -> None:
    uid = "big:1"
    tasks = {f"t{i}": {"after": ["a"], "run": "P"} for i in range(PAST_UNPACK)}
    await unlimited.configure(uid, {"tasks": tasks})
    outcome = await unlimited.fire(uid, "a", {"n": 1})
    assert len(outcome.scheduled) == PAST_UNPACK
    scheduled = await unlimited.instances(uid, status="scheduled")
    assert len(scheduled) == PAST_UNPACK
    assert len(await unlimited.instances(uid)) == PAST_UNPACK
    _, unresolved = await unlimited.unresolved(uid)
    assert len(unresolved) == PAST_UNPACK


async def test_an_after_of_more_than_8000_triggers(unlimited: Engine) -> None:
    """A new instance is pre-filled from the latest kwargs of every other trigger (D7): one
    HMGET of 8,000 fields before, now in chunks."""
    uid = "big:2"
    triggers = [f"x{i}" for i in range(PAST_UNPACK)]
    await in_batches(PAST_UNPACK - 1, lambda i: unlimited.fire(uid, f"x{i + 1}", {"i": i + 1}))
    await unlimited.configure(uid, {"tasks": {"t": {"after": triggers, "run": "P"}}})
    tasks, _ = await unlimited.unresolved(uid)
    assert [task.waitingFor for task in tasks] == [["x0"]]
    outcome = await unlimited.fire(uid, "x0", {"i": 0})
    assert outcome.scheduled == ["t#0"]
    instance = await unlimited.instance(uid, "t#0")
    assert len(instance.kwargs) == PAST_UNPACK
    assert instance.kwargs["x8000"] == {"i": 8000}


async def test_listing_more_than_8000_instances_of_one_task(unlimited: Engine) -> None:
    uid = "big:3"
    await unlimited.configure(uid, {"tasks": {"p": {"after": [], "andEvery": "page", "run": "P"}}})
    await in_batches(PAST_UNPACK, lambda _: unlimited.fire(uid, "page"))
    listed = await unlimited.instances(uid, task="p")
    assert [i.name for i in listed] == [f"p#{n}" for n in range(PAST_UNPACK)]
    assert len(await unlimited.instances(uid, task="p", status="scheduled")) == PAST_UNPACK
    snapshot = await unlimited.snapshot(uid)
    assert len(snapshot.instances) == snapshot.instanceCount == PAST_UNPACK
    first, following = await unlimited.instances_page(uid, task="p", limit=1000)
    assert [i.name for i in first] == [f"p#{n}" for n in range(1000)]
    assert following is not None


# -- reads in pages, on small sessions with a small page ------------------------------------


@pytest.fixture
async def paged(redis_url: str) -> AsyncIterator[Engine]:
    """An engine reading 3 records per command, so every paging path runs on a few instances."""
    engine = Engine(
        Redis.from_url(redis_url, decode_responses=True), prefix=unique_prefix(), page_size=3
    )
    await engine.load_scripts()
    yield engine
    await engine.aclose()


async def build_mixed(engine: Engine, uid: str) -> None:
    """t_a: 12 scheduled instances, t_w: 4 unstarted waiting for b, t_b: 1 scheduled, t_c: 1
    unstarted waiting for never (18 instances); 9 distinct fired triggers."""
    await engine.configure(
        uid,
        {"tasks": {
            "t_a": {"after": [], "andEvery": "page", "run": "P"},
            "t_w": {"after": ["b"], "andEvery": "wpage", "run": "P"},
            "t_b": {"after": ["go"], "run": "P"},
            "t_c": {"after": ["never", "go"], "run": "P"},
        }},
    )  # fmt: skip
    for _ in range(12):
        await engine.fire(uid, "page")
    for _ in range(4):
        await engine.fire(uid, "wpage")
    await engine.fire(uid, "go")
    for i in range(5):
        await engine.fire(uid, f"other{i}", {"i": i})


async def test_paged_reads_give_the_whole_session(paged: Engine) -> None:
    uid = "paged:1"
    await build_mixed(paged, uid)
    snapshot = await paged.snapshot(uid)
    assert snapshot.instanceCount == 18
    assert list(snapshot.instances)[:3] == ["t_a#0", "t_a#1", "t_a#2"]
    assert len(snapshot.instances) == 18 and snapshot.instancesNext is None
    assert set(snapshot.latestKwargs) >= {"page", "wpage", "go", "other4"}
    assert list(snapshot.tasks) == ["t_a", "t_w", "t_b", "t_c"]  # configuration order

    bounded = await paged.snapshot(uid, max_instances=2)
    assert list(bounded.instances) == ["t_a#0", "t_a#1"]
    assert bounded.instanceCount == 18 and bounded.instancesNext is not None

    tasks, instances = await paged.unresolved(uid)
    assert [(t.name, t.waitingFor) for t in tasks] == [
        ("t_a", []), ("t_w", ["b"]), ("t_b", []), ("t_c", ["never"]),
    ]  # fmt: skip
    assert len(instances) == 18
    assert {i.name: i.waitingFor for i in instances if i.task == "t_w"} == {
        f"t_w#{n}": ["b"] for n in range(4)
    }


W = [f"t_w#{n}" for n in range(4)]


@pytest.mark.parametrize(
    ("status", "task", "expected"),
    [
        (
            None,
            None,
            [*(f"t_a#{n}" for n in range(12)), "t_b#0", "t_c#0", *(f"t_w#{n}" for n in range(4))],
        ),
        (None, "t_a", [f"t_a#{n}" for n in range(12)]),
        ("unstarted", None, ["t_c#0", *W]),
        ("scheduled", "t_a", sorted(f"t_a#{n}" for n in range(12))),  # index order: as text
        ("scheduled", "t_b", ["t_b#0"]),
        ("failed", None, []),
        (None, "nothing", []),
    ],
)
async def test_pages_follow_each_other(
    paged: Engine, status: str | None, task: str | None, expected: list[str]
) -> None:
    uid = f"paged:{status}:{task}"
    await build_mixed(paged, uid)
    for limit in (1, 2, 3):
        names: list[str] = []
        cursor: str | None = None
        while True:
            page, cursor = await paged.instances_page(
                uid, status=status, task=task, cursor=cursor, limit=limit
            )
            assert len(page) <= limit
            names.extend(i.name for i in page)
            if cursor is None:
                break
        assert names == expected, limit
    everything = await paged.instances(uid, status=status, task=task)
    assert sorted(i.name for i in everything) == sorted(expected)


# -- the API ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_pages(redis_url: str) -> Iterator[tuple[str, Settings]]:
    settings = api_settings(redis_url, page_size=5)
    with LiveServer(settings) as live:
        yield live.url, settings


async def test_api_lists_instances_in_pages(
    small_pages: tuple[str, Settings], redis_url: str
) -> None:
    url, settings = small_pages
    async with (
        engine_on(redis_url, settings.key_prefix) as engine,
        httpx.AsyncClient(base_url=url, timeout=30) as api,
    ):
        uid = "api:1"
        await build_mixed(engine, uid)
        seen: list[str] = []
        query: dict[str, Any] = {"limit": 4}
        while True:
            answer = await api.get(f"/sessions/{uid}/instances", params=query)
            assert answer.status_code == 200, answer.text
            body = answer.json()
            seen.extend(i["name"] for i in body["instances"])
            if body["next"] is None:
                break
            query = {"limit": 4, "cursor": body["next"]}
        assert len(seen) == 18 and len(set(seen)) == 18
        assert seen[:2] == ["t_a#0", "t_a#1"]

        default = (await api.get(f"/sessions/{uid}/instances")).json()
        assert len(default["instances"]) == 5 and default["next"] is not None  # the page size
        only = await api.get(f"/sessions/{uid}/instances", params={"status": "unstarted"})
        assert [i["name"] for i in only.json()["instances"]] == ["t_c#0"] + [
            f"t_w#{n}" for n in range(4)
        ]
        assert only.json()["next"] is None

        session = (await api.get(f"/sessions/{uid}")).json()
        assert session["instanceCount"] == 18
        assert list(session["instances"]) == ["t_a#0", "t_a#1", "t_a#2", "t_a#3", "t_a#4"]
        following = session["instancesNext"]
        rest = (await api.get(f"/sessions/{uid}/instances", params={"cursor": following})).json()
        assert [i["name"] for i in rest["instances"]] == [f"t_a#{n}" for n in range(5, 10)]


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"limit": 6}, "query.limit"),
        ({"limit": 0}, "query.limit"),
        ({"cursor": "garbage"}, "query.cursor"),
        ({"status": "scheduled", "cursor": "WyJuIiwidF9hIiwxXQ"}, "query.cursor"),  # a task's
    ],
)
async def test_api_refuses_bad_limits_and_cursors(
    small_pages: tuple[str, Settings], query: dict[str, Any], field: str
) -> None:
    url, _ = small_pages
    async with httpx.AsyncClient(base_url=url, timeout=30) as api:
        assert (await api.post("/sessions/api:2/fire", json={"trigger": "x"})).status_code == 200
        answer = await api.get("/sessions/api:2/instances", params=query)
        assert answer.status_code == 422, answer.text
        fields = [error["field"] for error in answer.json()["errors"]]
        assert field in fields, fields


async def test_paged_reads_on_both_backends(any_engine: Engine) -> None:
    """The reads are plain commands and pipelines of one session's keys: same on Cluster."""
    uid = "both:1"
    await build_mixed(any_engine, uid)
    any_engine.reader.page = 4
    snapshot = await any_engine.snapshot(uid)
    assert snapshot.instanceCount == len(snapshot.instances) == 18
    page, following = await any_engine.instances_page(uid, status="scheduled", limit=2)
    assert len(page) == 2 and following is not None
    page, _ = await any_engine.instances_page(uid, status="scheduled", cursor=following, limit=2)
    assert len(page) == 2
    tasks, instances = await any_engine.unresolved(uid)
    assert len(tasks) == 4 and len(instances) == 18
    assert (await any_engine.instance(uid, "t_c#0")).status == "unstarted"
