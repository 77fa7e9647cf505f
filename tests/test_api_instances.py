"""Instance endpoints through real HTTP: listing with filters, unresolved instances, one
instance, and the operator transitions (replay, skip, status, metadata, logs-resolved).

The server of this module shares its Redis key prefix with an engine held by the tests, which
plays the worker: it claims scheduled instances and fails or completes them, so that the API
sees failed and running instances without any worker process. Every refused request is checked
to change nothing (the session's whole state, ``version`` included, before and after).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from service.engine import Engine
from service.settings import Settings
from tests.conftest import LiveServer, api_settings, engine_on

PROBLEM = "application/problem+json"


def new_uid(tag: str = "i") -> str:
    return f"{tag}-{uuid.uuid4().hex[:12]}"


def enc(name: str) -> str:
    """An instance name as a path segment: percent-encoded (t_a#0 -> t_a%230)."""
    return quote(name, safe="")


def assert_problem(
    response: httpx.Response, status: int, kind: str, field: str | None = None
) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].split(";")[0] == PROBLEM, response.headers
    body = response.json()
    assert body["type"] == f"/problems/{kind}", body
    assert body["status"] == status, body
    assert isinstance(body["errors"], list), body
    if field is not None:
        fields = [error["field"] for error in body["errors"]]
        assert any(f == field or f.startswith(field + ".") for f in fields), (field, body)
    return body


@pytest.fixture(scope="module")
def server(redis_url: str) -> Iterator[tuple[str, Settings]]:
    settings = api_settings(redis_url)
    with LiveServer(settings) as live:
        yield live.url, settings


@pytest.fixture(scope="module")
async def engine(server: tuple[str, Settings], redis_url: str) -> AsyncIterator[Engine]:
    """An engine on the server's Redis and key prefix: the tests' worker."""
    async with engine_on(redis_url, server[1].key_prefix) as engine:
        yield engine


@pytest.fixture
async def api(server: tuple[str, Settings]) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server[0], timeout=10) as client:
        yield client


async def state(api: httpx.AsyncClient, uid: str) -> tuple[int, Any]:
    response = await api.get(f"/sessions/{uid}")
    assert response.status_code in (200, 404), response.text
    return response.status_code, response.json()


async def configure(api: httpx.AsyncClient, uid: str, tasks: dict[str, Any]) -> None:
    response = await api.patch(f"/sessions/{uid}/config", json={"tasks": tasks})
    assert response.status_code == 200, response.text


async def fire(
    api: httpx.AsyncClient, uid: str, trigger: str, kwargs: dict[str, Any] | None = None
) -> dict[str, Any]:
    response = await api.post(f"/sessions/{uid}/fire", json={"trigger": trigger, "kwargs": kwargs})
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


async def fail(engine: Engine, uid: str, name: str) -> None:
    """What a worker does with a task that raises: claim, then fail."""
    claim = await engine.claim(uid, name)
    assert claim.state == "claimed" and claim.token is not None, claim
    await engine.fail(uid, name, claim.token, "builtins.RuntimeError", "boom")


async def instance(api: httpx.AsyncClient, uid: str, name: str) -> dict[str, Any]:
    response = await api.get(f"/sessions/{uid}/instances/{enc(name)}")
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


CHAIN = {
    "t_a": {"after": ["go"], "run": "X"},
    "t_b": {"after": ["t_a"], "run": "P"},
}


async def failed_chain(api: httpx.AsyncClient, engine: Engine) -> str:
    """N18's session: t_a after [go] fails; t_b after [t_a] waits. Returns its UID."""
    uid = new_uid()
    await configure(api, uid, CHAIN)
    assert (await fire(api, uid, "go", {"a": 1}))["scheduled"] == ["t_a#0"]
    await fail(engine, uid, "t_a#0")
    return uid


def names(answer: dict[str, Any]) -> list[str]:
    return [item["name"] for item in answer["instances"]]


# -- reads ----------------------------------------------------------------------------------


async def test_list_instances_filtered_by_status_and_task(
    api: httpx.AsyncClient, engine: Engine
) -> None:
    uid = new_uid()
    await configure(
        api,
        uid,
        {
            "t_a": {"after": [], "andEvery": "go", "run": "X"},
            "t_a_more": {"after": ["more"], "run": "X"},
            "t_b": {"after": ["x", "y"], "run": "X"},
        },
    )
    for n in range(3):
        await fire(api, uid, "go", {"n": n})
    await fire(api, uid, "more")
    await fire(api, uid, "x")
    await fail(engine, uid, "t_a#1")
    assert (await engine.claim(uid, "t_a#2")).state == "claimed"

    async def listed(**params: str) -> list[str]:
        response = await api.get(f"/sessions/{uid}/instances", params=params)
        assert response.status_code == 200, response.text
        return names(response.json())

    everything = await api.get(f"/sessions/{uid}/instances")
    assert everything.status_code == 200
    items = everything.json()["instances"]
    assert [i["name"] for i in items] == ["t_a#0", "t_a#1", "t_a#2", "t_a_more#0", "t_b#0"]
    by_name = {i["name"]: i for i in items}
    assert by_name["t_a#0"]["kwargs"] == {"go": {"n": 0}}
    assert by_name["t_a#1"]["metadata"]["exceptionType"] == "builtins.RuntimeError"
    assert {i["status"] for i in items} == {"scheduled", "failed", "running", "unstarted"}
    for item in items:
        assert set(item) >= {"name", "task", "status", "kwargs", "abandonState", "metadata"}

    assert await listed(status="scheduled") == ["t_a#0", "t_a_more#0"]
    assert await listed(status="failed") == ["t_a#1"]
    assert await listed(status="running") == ["t_a#2"]
    assert await listed(status="unstarted") == ["t_b#0"]
    assert await listed(status="finished") == []
    assert await listed(task="t_a") == ["t_a#0", "t_a#1", "t_a#2"]
    assert await listed(task="t_b") == ["t_b#0"]
    assert await listed(task="unknown") == []
    assert await listed(task="t_a", status="scheduled") == ["t_a#0"]  # not t_a_more#0
    assert await listed(task="t_a", status="failed") == ["t_a#1"]
    assert await listed(task="t_b", status="failed") == []


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("status=bogus", "query.status"),
        ("status=", "query.status"),
        ("status=FAILED", "query.status"),
        ("task=a%23b", "query.task"),
        ("task=", "query.task"),
        ("task=" + "t" * 201, "query.task"),
        ("task=a%01", "query.task"),
    ],
)
async def test_list_instances_with_invalid_filters_is_422(
    api: httpx.AsyncClient, query: str, field: str
) -> None:
    uid = new_uid()
    await fire(api, uid, "go")
    response = await api.get(f"/sessions/{uid}/instances?{query}")
    assert_problem(response, 422, "validation-error", field)


async def test_unresolved_instances_say_what_they_wait_for_and_why(
    api: httpx.AsyncClient, engine: Engine
) -> None:
    uid = new_uid()
    await configure(
        api,
        uid,
        {
            "t_wait": {"after": ["a", "b", "c"], "run": "X"},
            "t_fail": {"after": ["go"], "run": "X"},
            "t_sched": {"after": ["go"], "run": "X"},
            "t_run": {"after": ["go"], "run": "X"},
            "t_done": {"after": ["go"], "run": "X"},
        },
    )
    await fire(api, uid, "a", {"v": 1})
    await fire(api, uid, "go")
    await fail(engine, uid, "t_fail#0")
    assert (await engine.claim(uid, "t_run#0")).state == "claimed"
    done = await api.post(
        f"/sessions/{uid}/instances/{enc('t_done#0')}/status", json={"status": "finished"}
    )
    assert done.status_code == 200, done.text

    response = await api.get(f"/sessions/{uid}/instances/unresolved")
    assert response.status_code == 200, response.text
    items = {item["name"]: item for item in response.json()["instances"]}
    assert set(items) == {"t_wait#0", "t_fail#0", "t_sched#0", "t_run#0"}  # not t_done#0
    for item in items.values():
        assert set(item) >= {"name", "task", "status", "kwargs", "metadata", "waitingFor"}
        assert isinstance(item["reason"], str) and item["reason"]

    waiting = items["t_wait#0"]
    assert waiting["status"] == "unstarted"
    assert waiting["waitingFor"] == ["b", "c"]
    assert waiting["kwargs"] == {"a": {"v": 1}}
    assert "b" in waiting["reason"] and "c" in waiting["reason"]

    failed = items["t_fail#0"]
    assert failed["status"] == "failed" and failed["waitingFor"] == []
    assert "RuntimeError" in failed["reason"]
    assert "replayed or skipped" in failed["reason"]  # it blocks its cascade until then

    assert items["t_sched#0"]["status"] == "scheduled"
    assert "scheduled" in items["t_sched#0"]["reason"]
    assert items["t_run#0"]["status"] == "running"
    assert "running" in items["t_run#0"]["reason"]


async def test_get_one_instance(api: httpx.AsyncClient, engine: Engine) -> None:
    uid = await failed_chain(api, engine)
    got = await api.get(f"/sessions/{uid}/instances/t_a%230")
    assert got.status_code == 200, got.text
    body = got.json()
    assert body["name"] == "t_a#0"
    assert body["task"] == "t_a"
    assert body["status"] == "failed"
    assert body["kwargs"] == {"go": {"a": 1}}
    assert body["abandonState"] == []
    metadata = body["metadata"]
    assert metadata["exceptionType"] == "builtins.RuntimeError"
    assert metadata["exceptionInfo"] == "boom"
    assert metadata["actualKwargs"] == {"go": {"a": 1}}
    assert set(metadata["timestamps"]) >= {"created", "lastModified", "running", "failed"}
    # The same instance as in the session's state.
    assert (await state(api, uid))[1]["instances"]["t_a#0"] == body


@pytest.mark.parametrize(
    "task", ["with space", "percent%sign", "question?mark", "tâche €", "slash/inside"]
)
async def test_instance_names_are_percent_encoded_in_paths(
    api: httpx.AsyncClient, engine: Engine, task: str
) -> None:
    """Task names may hold any character but '#' and control characters; their instances are
    reached with the name percent-encoded (API.md)."""
    uid = new_uid()
    await configure(api, uid, {task: {"after": ["go"], "run": "X"}})
    await fire(api, uid, "go")
    name = f"{task}#0"
    response = await api.get(f"/sessions/{uid}/instances/{enc(name)}")
    assert response.status_code == 200, response.text
    assert response.json()["name"] == name
    await fail(engine, uid, name)
    response = await api.post(f"/sessions/{uid}/instances/{enc(name)}/replay")
    assert response.status_code == 200, response.text
    assert response.json() == {"replayed": name, "instance": f"{task}#1"}


INSTANCE_ENDPOINTS: list[tuple[str, str, Any]] = [
    ("GET", "", None),
    ("POST", "/replay", {}),
    ("POST", "/skip", {}),
    ("POST", "/status", {"status": "finished"}),
    ("PATCH", "/metadata", {"k": 1}),
    ("POST", "/logs-resolved", None),
]


@pytest.mark.parametrize(("method", "suffix", "body"), INSTANCE_ENDPOINTS)
async def test_unknown_instance_or_session_is_404_and_changes_nothing(
    api: httpx.AsyncClient, engine: Engine, method: str, suffix: str, body: Any
) -> None:
    uid = await failed_chain(api, engine)
    before = await state(api, uid)
    for name in ("t_a#7", "t_zz#0", "t_b#0"):  # t_b has no instance yet
        response = await api.request(
            method, f"/sessions/{uid}/instances/{enc(name)}{suffix}", json=body
        )
        assert_problem(response, 404, "not-found")
    assert await state(api, uid) == before

    unknown = new_uid()
    response = await api.request(
        method, f"/sessions/{unknown}/instances/t_a%230{suffix}", json=body
    )
    assert_problem(response, 404, "not-found")
    assert (await state(api, unknown))[0] == 404


@pytest.mark.parametrize("suffix", ["/instances", "/instances/unresolved"])
async def test_instance_lists_of_an_unknown_session_are_404(
    api: httpx.AsyncClient, suffix: str
) -> None:
    uid = new_uid()
    assert_problem(await api.get(f"/sessions/{uid}{suffix}"), 404, "not-found")
    assert (await state(api, uid))[0] == 404


BAD_NAMES = {
    "no-hash": "t_a0",
    "no-number": "t_a%23",
    "not-a-number": "t_a%23x",
    "negative": "t_a%23-1",
    "no-task": "%230",
    "two-hashes": "t%23a%230",
    "control": "t%01%230",
    "task-too-long": "t" * 201 + "%230",
    "number-too-long": "t%23" + "1" * 19,
}


@pytest.mark.parametrize(("method", "suffix", "body"), INSTANCE_ENDPOINTS)
@pytest.mark.parametrize("bad", list(BAD_NAMES.values()), ids=list(BAD_NAMES))
async def test_instance_name_out_of_bounds_is_422_naming_path_name(
    api: httpx.AsyncClient, method: str, suffix: str, body: Any, bad: str
) -> None:
    uid = new_uid()
    await fire(api, uid, "go")
    before = await state(api, uid)
    response = await api.request(method, f"/sessions/{uid}/instances/{bad}{suffix}", json=body)
    assert_problem(response, 422, "validation-error", "path.name")
    assert await state(api, uid) == before


@pytest.mark.parametrize(
    ("method", "suffix", "body"),
    [
        *INSTANCE_ENDPOINTS,
        ("GET", "/../instances", None),
        ("GET", "/../instances/unresolved", None),
    ],
    ids=lambda value: value if isinstance(value, str) else None,
)
async def test_instance_endpoints_refuse_bad_uids(
    api: httpx.AsyncClient, method: str, suffix: str, body: Any
) -> None:
    if suffix.startswith("/.."):  # the session-level lists
        path = f"/sessions/a%20b{suffix.removeprefix('/..')}"
    else:
        path = f"/sessions/a%20b/instances/t%230{suffix}"
    response = await api.request(method, path, json=body)
    assert_problem(response, 422, "validation-error", "path.uid")


# -- replay ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("request_body", "expected_kwargs"),
    [
        (None, {"go": {"a": 1}}),  # no body: the parent's kwargs
        ({}, {"go": {"a": 1}}),  # no kwargs field: the parent's kwargs
        ({"kwargs": None}, {"go": {"a": 1}}),
        ({"kwargs": {}}, {}),  # {}: no kwargs
        ({"kwargs": {"go": {"b": 2}, "other": {}}}, {"go": {"b": 2}, "other": {}}),
    ],
    ids=["absent", "empty-body", "null", "empty-kwargs", "replacement"],
)
async def test_replay_a_failed_instance(
    api: httpx.AsyncClient, engine: Engine, request_body: Any, expected_kwargs: Any
) -> None:
    uid = await failed_chain(api, engine)
    version = (await state(api, uid))[1]["version"]
    if request_body is None:
        response = await api.post(f"/sessions/{uid}/instances/t_a%230/replay")
    else:
        response = await api.post(f"/sessions/{uid}/instances/t_a%230/replay", json=request_body)
    assert response.status_code == 200, response.text
    assert response.json() == {"replayed": "t_a#0", "instance": "t_a#1"}

    parent = await instance(api, uid, "t_a#0")
    assert parent["status"] == "replayed"
    assert parent["kwargs"] == {"go": {"a": 1}}
    clone = await instance(api, uid, "t_a#1")
    assert clone["task"] == "t_a"
    assert clone["status"] == "scheduled"
    assert clone["kwargs"] == expected_kwargs
    assert clone["metadata"]["parent"] == "t_a#0"
    assert clone["metadata"]["depth"] == 1
    assert "exceptionType" not in clone["metadata"]
    session = (await state(api, uid))[1]
    assert session["version"] == version + 1
    assert "t_b#0" not in session["instances"]

    # The clone runs with those kwargs; failing again and replaying the clone goes deeper.
    claim = await engine.claim(uid, "t_a#1")
    assert claim.kwargs == expected_kwargs
    assert claim.token is not None
    await engine.fail(uid, "t_a#1", claim.token, "builtins.RuntimeError", "again")
    response = await api.post(f"/sessions/{uid}/instances/t_a%231/replay")
    assert response.json() == {"replayed": "t_a#1", "instance": "t_a#2"}
    assert (await instance(api, uid, "t_a#2"))["metadata"]["depth"] == 2


async def test_replay_unless_failed_is_409_and_changes_nothing(
    api: httpx.AsyncClient, engine: Engine
) -> None:
    uid = await failed_chain(api, engine)
    response = await api.post(f"/sessions/{uid}/instances/t_a%230/replay")
    assert response.status_code == 200, response.text
    await fire(api, uid, "t_a")  # t_b#0 scheduled
    before = await state(api, uid)
    # replayed (the parent), scheduled (the clone, t_b#0)
    for name in ("t_a#0", "t_a#1", "t_b#0"):
        response = await api.post(f"/sessions/{uid}/instances/{enc(name)}/replay", json={})
        body = assert_problem(response, 409, "conflict")
        assert name in body["detail"]
    assert await state(api, uid) == before


BAD_REPLAYS: dict[str, tuple[Any, str]] = {
    "kwargs-not-object": ({"kwargs": [1]}, "body.kwargs"),
    "kwargs-string": ({"kwargs": "go"}, "body.kwargs"),
    "kwargs-value-scalar": ({"kwargs": {"go": 1}}, "body.kwargs.go"),
    "kwargs-value-list": ({"kwargs": {"go": [1]}}, "body.kwargs.go"),
    "kwargs-trigger-hash": ({"kwargs": {"a#b": {}}}, "body.kwargs"),
    "kwargs-trigger-empty": ({"kwargs": {"": {}}}, "body.kwargs"),
    "kwargs-huge-int": ({"kwargs": {"go": {"n": 2**70}}}, "body.kwargs"),
    "unknown-field": ({"kwargs": {}, "cascade": True}, "body.cascade"),
    "body-list": ([], "body"),
    "body-string": ("x", "body"),
}


@pytest.mark.parametrize(("body", "field"), list(BAD_REPLAYS.values()), ids=list(BAD_REPLAYS))
async def test_invalid_replay_is_422_naming_the_field_and_changes_nothing(
    api: httpx.AsyncClient, engine: Engine, body: Any, field: str
) -> None:
    uid = await failed_chain(api, engine)
    before = await state(api, uid)
    response = await api.post(f"/sessions/{uid}/instances/t_a%230/replay", json=body)
    assert_problem(response, 422, "validation-error", field)
    assert await state(api, uid) == before


# -- skip -----------------------------------------------------------------------------------


@pytest.mark.parametrize("request_body", [None, {}, {"cascade": False}])
async def test_skip_without_cascade(
    api: httpx.AsyncClient, engine: Engine, request_body: Any
) -> None:
    uid = await failed_chain(api, engine)
    path = f"/sessions/{uid}/instances/t_a%230/skip"
    if request_body is None:
        response = await api.post(path)
    else:
        response = await api.post(path, json=request_body)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["name"] == "t_a#0" and body["status"] == "skipped"
    assert body["metadata"]["exceptionType"] == "builtins.RuntimeError"  # failure kept
    assert body["metadata"]["result"] == {}
    assert body["metadata"]["cascade"] is False
    assert "skipped" in body["metadata"]["timestamps"]
    assert body == await instance(api, uid, "t_a#0")
    session = (await state(api, uid))[1]
    assert "t_b#0" not in session["instances"]  # no cascade
    assert "t_a" not in session["latestKwargs"]


async def test_skip_with_cascade_fires_the_task_with_the_result(
    api: httpx.AsyncClient, engine: Engine
) -> None:
    uid = await failed_chain(api, engine)
    response = await api.post(
        f"/sessions/{uid}/instances/t_a%230/skip",
        json={"cascade": True, "result": {"r": [1, 2], "s": "x"}},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "skipped"
    assert body["metadata"]["cascade"] is True
    assert body["metadata"]["result"] == {"r": [1, 2], "s": "x"}
    t_b = await instance(api, uid, "t_b#0")
    assert t_b["status"] == "scheduled"
    assert t_b["kwargs"] == {"t_a": {"r": [1, 2], "s": "x"}}


async def test_skip_with_a_result_but_no_cascade_keeps_the_result(
    api: httpx.AsyncClient, engine: Engine
) -> None:
    uid = await failed_chain(api, engine)
    response = await api.post(f"/sessions/{uid}/instances/t_a%230/skip", json={"result": {"r": 1}})
    assert response.status_code == 200, response.text
    assert response.json()["metadata"]["result"] == {"r": 1}
    assert "t_b#0" not in (await state(api, uid))[1]["instances"]


async def test_skip_unless_failed_is_409_and_changes_nothing(
    api: httpx.AsyncClient, engine: Engine
) -> None:
    uid = await failed_chain(api, engine)
    skipped = await api.post(f"/sessions/{uid}/instances/t_a%230/skip", json={"cascade": True})
    assert skipped.status_code == 200, skipped.text
    before = await state(api, uid)
    for name in ("t_a#0", "t_b#0"):  # skipped, scheduled
        for body in ({}, {"cascade": True, "result": {"x": 1}}):
            response = await api.post(f"/sessions/{uid}/instances/{enc(name)}/skip", json=body)
            assert_problem(response, 409, "conflict")
    assert await state(api, uid) == before


BAD_SKIPS: dict[str, tuple[Any, str]] = {
    "cascade-word": ({"cascade": "maybe"}, "body.cascade"),
    "cascade-object": ({"cascade": {}}, "body.cascade"),
    "result-list": ({"result": [1]}, "body.result"),
    "result-string": ({"result": "ok"}, "body.result"),
    "result-huge-int": ({"result": {"n": 2**70}}, "body.result"),
    "unknown-field": ({"cascadeKwargs": {}}, "body.cascadeKwargs"),
    "body-list": ([True], "body"),
}


@pytest.mark.parametrize(("body", "field"), list(BAD_SKIPS.values()), ids=list(BAD_SKIPS))
async def test_invalid_skip_is_422_naming_the_field_and_changes_nothing(
    api: httpx.AsyncClient, engine: Engine, body: Any, field: str
) -> None:
    uid = await failed_chain(api, engine)
    before = await state(api, uid)
    response = await api.post(f"/sessions/{uid}/instances/t_a%230/skip", json=body)
    assert_problem(response, 422, "validation-error", field)
    assert await state(api, uid) == before


async def test_booleans_are_not_coerced(api: httpx.AsyncClient, engine: Engine) -> None:
    """API.md: wrong types are refused; "cascade" is a boolean, not "yes", "off" or 1."""
    answers, changed = {}, []
    for suffix, extra in (("skip", {}), ("status", {"status": "failed"})):
        for value in ("yes", "off", 1):
            uid = await failed_chain(api, engine)
            before = await state(api, uid)
            response = await api.post(
                f"/sessions/{uid}/instances/t_a%230/{suffix}", json={**extra, "cascade": value}
            )
            answers[f"{suffix} {value!r}"] = response.status_code
            if response.status_code == 422:
                assert_problem(response, 422, "validation-error", "body.cascade")
            if await state(api, uid) != before:
                changed.append(f"{suffix} {value!r}")
    assert set(answers.values()) == {422}, answers
    assert not changed, changed


# -- status ---------------------------------------------------------------------------------


async def test_status_with_cascade_and_cascade_kwargs_n18(
    api: httpx.AsyncClient, engine: Engine
) -> None:
    """SEMANTICS.md N18: t_a#0 failed; set finished with metadata, cascade and cascadeKwargs."""
    uid = await failed_chain(api, engine)
    response = await api.post(
        f"/sessions/{uid}/instances/t_a%230/status",
        json={
            "status": "finished",
            "metadata": {"note": "manual"},
            "cascade": True,
            "cascadeKwargs": {"x": 1},
        },
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["name"] == "t_a#0" and body["status"] == "finished"
    assert body["metadata"]["exceptionType"] == "builtins.RuntimeError"  # kept
    assert body["metadata"]["note"] == "manual"
    assert "finished" in body["metadata"]["timestamps"]
    assert body == await instance(api, uid, "t_a#0")

    t_b = await instance(api, uid, "t_b#0")
    assert t_b["status"] == "scheduled"
    assert t_b["kwargs"] == {"t_a": {"x": 1}}
    # t_b#0 runs with {"t_a": {"x": 1}} (P returns what it received).
    claim = await engine.claim(uid, "t_b#0")
    assert claim.state == "claimed" and claim.token is not None
    assert claim.kwargs == {"t_a": {"x": 1}}
    await engine.complete(uid, "t_b#0", claim.token, {"kwargs": claim.kwargs})
    t_b = await instance(api, uid, "t_b#0")
    assert t_b["status"] == "finished"
    assert t_b["metadata"]["actualKwargs"] == {"t_a": {"x": 1}}
    assert t_b["metadata"]["result"] == {"kwargs": {"t_a": {"x": 1}}}


async def test_status_without_cascade_fires_nothing(api: httpx.AsyncClient, engine: Engine) -> None:
    uid = await failed_chain(api, engine)
    response = await api.post(
        f"/sessions/{uid}/instances/t_a%230/status", json={"status": "finished"}
    )
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "finished"
    session = (await state(api, uid))[1]
    assert "t_b#0" not in session["instances"]
    assert "t_a" not in session["latestKwargs"]


async def test_status_cascade_without_kwargs_fires_empty_kwargs(
    api: httpx.AsyncClient, engine: Engine
) -> None:
    uid = await failed_chain(api, engine)
    response = await api.post(
        f"/sessions/{uid}/instances/t_a%230/status", json={"status": "skipped", "cascade": True}
    )
    assert response.status_code == 200, response.text
    assert (await instance(api, uid, "t_b#0"))["kwargs"] == {"t_a": {}}


async def test_status_has_no_transition_check(api: httpx.AsyncClient, engine: Engine) -> None:
    """Operators and external workers may set any status from any status (H3)."""
    uid = new_uid()
    await configure(api, uid, CHAIN)
    await fire(api, uid, "go")
    path = f"/sessions/{uid}/instances/t_a%230/status"
    for status in ("running", "failed", "scheduled", "unstarted", "abandoned", "failed"):
        response = await api.post(path, json={"status": status})
        assert response.status_code == 200, response.text
        assert response.json()["status"] == status
        assert status in response.json()["metadata"]["timestamps"]
    # Set to failed by an operator, it can be replayed.
    replay = await api.post(f"/sessions/{uid}/instances/t_a%230/replay")
    assert replay.status_code == 200, replay.text


BAD_STATUSES: dict[str, tuple[Any, str]] = {
    "unknown-status": ({"status": "done"}, "body.status"),
    "status-case": ({"status": "Finished"}, "body.status"),
    "status-missing": ({"metadata": {}}, "body.status"),
    "status-number": ({"status": 3}, "body.status"),
    "status-null": ({"status": None}, "body.status"),
    "metadata-list": ({"status": "finished", "metadata": [1]}, "body.metadata"),
    "metadata-timestamps": (
        {"status": "finished", "metadata": {"timestamps": {}}},
        "body.metadata.timestamps",
    ),
    "metadata-huge-int": ({"status": "finished", "metadata": {"n": 2**70}}, "body.metadata"),
    "cascade-word": ({"status": "finished", "cascade": "maybe"}, "body.cascade"),
    "cascade-kwargs-list": (
        {"status": "finished", "cascade": True, "cascadeKwargs": [1]},
        "body.cascadeKwargs",
    ),
    "cascade-kwargs-huge-int": (
        {"status": "finished", "cascade": True, "cascadeKwargs": {"n": 2**70}},
        "body.cascadeKwargs",
    ),
    "unknown-field": ({"status": "finished", "result": {}}, "body.result"),
    "body-list": (["finished"], "body"),
    "body-null": (None, "body"),
}


@pytest.mark.parametrize(("body", "field"), list(BAD_STATUSES.values()), ids=list(BAD_STATUSES))
async def test_invalid_status_is_422_naming_the_field_and_changes_nothing(
    api: httpx.AsyncClient, engine: Engine, body: Any, field: str
) -> None:
    uid = await failed_chain(api, engine)
    before = await state(api, uid)
    response = await api.post(f"/sessions/{uid}/instances/t_a%230/status", json=body)
    assert_problem(response, 422, "validation-error", field)
    assert await state(api, uid) == before


# -- metadata and logs ----------------------------------------------------------------------


async def test_patch_metadata_merges_shallowly(api: httpx.AsyncClient, engine: Engine) -> None:
    uid = await failed_chain(api, engine)
    before = await instance(api, uid, "t_a#0")
    path = f"/sessions/{uid}/instances/t_a%230/metadata"
    response = await api.patch(path, json={"reviewedBy": "ops", "obj": {"a": 1}, "n": 1})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "failed"  # status untouched
    assert body["metadata"]["reviewedBy"] == "ops"
    assert body["metadata"]["obj"] == {"a": 1}
    assert body["metadata"]["exceptionType"] == "builtins.RuntimeError"
    timestamps = body["metadata"]["timestamps"]
    assert timestamps["lastModified"] >= before["metadata"]["timestamps"]["lastModified"]
    assert timestamps["failed"] == before["metadata"]["timestamps"]["failed"]

    response = await api.patch(path, json={"obj": {"b": 2}, "n": None})
    assert response.status_code == 200, response.text
    metadata = response.json()["metadata"]
    assert metadata["obj"] == {"b": 2}  # top-level keys replaced, not merged deeper
    assert metadata["n"] is None
    assert metadata["reviewedBy"] == "ops"
    assert response.json() == await instance(api, uid, "t_a#0")


async def test_logs_resolved(api: httpx.AsyncClient, engine: Engine) -> None:
    uid = await failed_chain(api, engine)
    response = await api.post(f"/sessions/{uid}/instances/t_a%230/logs-resolved")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["name"] == "t_a#0"
    assert body["status"] == "failed"
    assert body["metadata"]["logsResolved"] is True
    assert body["metadata"]["exceptionType"] == "builtins.RuntimeError"
    assert body == await instance(api, uid, "t_a#0")


BAD_METADATA: dict[str, tuple[Any, str]] = {
    "list": ([1], "body"),
    "string": ("x", "body"),
    "null": (None, "body"),
    "timestamps": ({"timestamps": {"created": "now"}}, "timestamps"),
    "huge-int": ({"n": 2**70}, "body"),
}


@pytest.mark.parametrize(("body", "field"), list(BAD_METADATA.values()), ids=list(BAD_METADATA))
async def test_invalid_metadata_is_422_naming_the_field_and_changes_nothing(
    api: httpx.AsyncClient, engine: Engine, body: Any, field: str
) -> None:
    uid = await failed_chain(api, engine)
    before = await state(api, uid)
    response = await api.patch(f"/sessions/{uid}/instances/t_a%230/metadata", json=body)
    problem = assert_problem(response, 422, "validation-error")
    fields = [error["field"] for error in problem["errors"]]
    if field == "timestamps":  # the key written by the engine only is named
        assert any(f.split(".")[-1] == "timestamps" for f in fields), problem
    else:
        assert any(f == field or f.startswith(field + ".") for f in fields), problem
    assert await state(api, uid) == before


@pytest.mark.parametrize(
    "suffix", ["/replay", "/skip", "/status", "/metadata"], ids=lambda s: s.strip("/")
)
async def test_malformed_json_on_instance_endpoints_is_400_and_changes_nothing(
    api: httpx.AsyncClient, engine: Engine, suffix: str
) -> None:
    uid = await failed_chain(api, engine)
    before = await state(api, uid)
    method = "PATCH" if suffix == "/metadata" else "POST"
    response = await api.request(
        method,
        f"/sessions/{uid}/instances/t_a%230{suffix}",
        content=b'{"status": "finished",',
        headers={"content-type": "application/json"},
    )
    assert_problem(response, 400, "malformed-json", "body")
    assert await state(api, uid) == before
