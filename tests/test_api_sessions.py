"""Session endpoints through real HTTP (httpx against uvicorn on a real Redis): configuration
(PATCH, PUT, GET), fire, the session's state, unresolved tasks, DELETE, and their refusals.

Every refused request is checked to change nothing: the session's whole state (``version``
included) is read before and after, and a session that did not exist still does not.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import LiveServer, api_settings

PROBLEM = "application/problem+json"
MIB = 1024 * 1024


def new_uid(tag: str = "s") -> str:
    return f"{tag}-{uuid.uuid4().hex[:12]}"


def assert_problem(
    response: httpx.Response, status: int, kind: str, field: str | None = None
) -> dict[str, Any]:
    """The answer is an RFC 9457 problem of this kind; ``field``: one error names it (or a
    part of it: ``body.tasks.t`` is named by ``body.tasks.t.after.0``)."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].split(";")[0] == PROBLEM, response.headers
    body = response.json()
    assert body["type"] == f"/problems/{kind}", body
    assert body["status"] == status, body
    assert isinstance(body["title"], str) and body["title"], body
    assert isinstance(body["errors"], list), body
    for error in body["errors"]:
        assert set(error) == {"field", "message"}, error
    if field is not None:
        fields = [error["field"] for error in body["errors"]]
        assert any(f == field or f.startswith(field + ".") for f in fields), (field, body)
    return body


async def state(api: httpx.AsyncClient, uid: str) -> tuple[int, Any]:
    """The whole session as GET /sessions/{uid} answers it (status, body)."""
    response = await api.get(f"/sessions/{uid}")
    assert response.status_code in (200, 404), response.text
    return response.status_code, response.json()


async def configure(
    api: httpx.AsyncClient, uid: str, tasks: dict[str, Any], **extra: Any
) -> dict[str, Any]:
    response = await api.patch(f"/sessions/{uid}/config", json={"tasks": tasks, **extra})
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


async def fire(
    api: httpx.AsyncClient, uid: str, trigger: str, kwargs: Any = None
) -> dict[str, Any]:
    body: dict[str, Any] = {"trigger": trigger}
    if kwargs is not None:
        body["kwargs"] = kwargs
    response = await api.post(f"/sessions/{uid}/fire", json=body)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def stored(task: dict[str, Any]) -> dict[str, Any]:
    """A task as the service returns it: defaults filled in, andEvery included in after."""
    after = list(task.get("after", []))
    every = task.get("andEvery")
    if every and every not in after:
        after.append(every)
    return {
        "unless": [],
        "andEvery": None,
        "withParams": {},
        "using": "dramatiq",
        "maxRetries": 3,
        **task,
        "after": after,
    }


# -- configuration --------------------------------------------------------------------------


async def test_patch_config_creates_the_session_and_answers_the_whole_config(
    api: httpx.AsyncClient,
) -> None:
    uid = new_uid()
    assert (await state(api, uid))[0] == 404
    tasks = {
        "t_import": {"after": ["submitted"], "run": "app.import_subject"},
        "t_page": {
            "after": ["t_import"],
            "andEvery": "pageReceived",
            "run": "https://tasks.example.com/page",
            "withParams": {"pageReceived": {"source": "web"}},
            "maxRetries": 5,
            "using": "external",
            "priority": "high",
            "owner": {"team": "ops", "tags": ["a", 1]},
        },
    }
    webhooks = [{"url": "https://hooks.example.com/triggers", "events": ["sessionFinalized"]}]
    response = await api.patch(
        f"/sessions/{uid}/config", json={"tasks": tasks, "webhooks": webhooks}
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    config = response.json()
    assert config == {
        "tasks": {name: stored(task) for name, task in tasks.items()},
        "webhooks": webhooks,
    }
    assert config["tasks"]["t_page"]["after"] == ["t_import", "pageReceived"]
    assert config["tasks"]["t_page"]["priority"] == "high"  # custom directives kept as given

    got = await api.get(f"/sessions/{uid}/config")
    assert got.status_code == 200
    assert got.json() == config

    status, session = await state(api, uid)
    assert status == 200
    assert session["uid"] == uid
    assert session["tasks"] == config["tasks"]
    assert session["instances"] == {}
    assert session["latestKwargs"] == {}
    assert session["finalized"] is False
    assert session["webhooks"] == webhooks
    assert isinstance(session["version"], int) and session["version"] >= 1
    assert isinstance(session["created"], str) and isinstance(session["updated"], str)


async def test_patch_config_merges_tasks_by_name(api: httpx.AsyncClient) -> None:
    uid = new_uid()
    hooks = [{"url": "https://hooks.example.com/a", "events": ["sessionFinalized"]}]
    await configure(
        api,
        uid,
        {
            "t_a": {"after": ["go"], "run": "app.a"},
            "t_b": {"after": ["t_a"], "run": "app.b", "custom": 1, "unless": ["stop"]},
        },
        webhooks=hooks,
    )
    version = (await state(api, uid))[1]["version"]
    config = await configure(
        api,
        uid,
        {"t_b": {"after": ["go"], "run": "app.b2"}, "t_c": {"after": ["t_b"], "run": "app.c"}},
    )
    assert list(config["tasks"]) == ["t_a", "t_b", "t_c"]
    assert config["tasks"]["t_a"] == stored({"after": ["go"], "run": "app.a"})
    # A task named in the body replaces the task of that name as a whole.
    assert config["tasks"]["t_b"] == stored({"after": ["go"], "run": "app.b2"})
    assert config["tasks"]["t_c"] == stored({"after": ["t_b"], "run": "app.c"})
    assert config["webhooks"] == hooks  # no webhooks in a PATCH: kept
    assert (await api.get(f"/sessions/{uid}/config")).json() == config
    assert (await state(api, uid))[1]["version"] > version


async def test_put_config_replaces_the_whole_configuration(api: httpx.AsyncClient) -> None:
    uid = new_uid()
    await configure(
        api,
        uid,
        {"t_a": {"after": ["go"], "run": "app.a"}, "t_b": {"after": ["t_a"], "run": "app.b"}},
        webhooks=[{"url": "https://hooks.example.com/a"}],
    )
    response = await api.put(
        f"/sessions/{uid}/config", json={"tasks": {"t_c": {"after": ["go"], "run": "app.c"}}}
    )
    assert response.status_code == 200, response.text
    config = response.json()
    assert config == {"tasks": {"t_c": stored({"after": ["go"], "run": "app.c"})}, "webhooks": None}
    assert (await api.get(f"/sessions/{uid}/config")).json() == config
    # The removed tasks are gone: firing their trigger schedules only t_c.
    assert (await fire(api, uid, "go"))["scheduled"] == ["t_c#0"]


async def test_put_config_creates_the_session(api: httpx.AsyncClient) -> None:
    uid = new_uid()
    response = await api.put(
        f"/sessions/{uid}/config", json={"tasks": {"t": {"after": ["a"], "run": "app.t"}}}
    )
    assert response.status_code == 200, response.text
    status, session = await state(api, uid)
    assert status == 200
    assert list(session["tasks"]) == ["t"]


async def test_names_at_their_bounds_are_accepted(api: httpx.AsyncClient) -> None:
    uid = ("u" + uuid.uuid4().hex + "_-.:@+" + "x" * 200)[:200]
    task = "t" * 200
    trigger = "g" * 200
    config = await configure(api, uid, {task: {"after": [trigger], "run": "app.t"}})
    assert config["tasks"][task]["after"] == [trigger]
    answer = await fire(api, uid, trigger)
    assert answer == {
        "uid": uid,
        "trigger": trigger,
        "scheduled": [f"{task}#0"],
        "abandoned": [],
        "finalized": False,
    }
    unicode_name = "tâche €"  # any characters but '#' and control characters
    config = await configure(api, uid, {unicode_name: {"after": ["événement"], "run": "app.t"}})
    assert unicode_name in config["tasks"]


async def test_get_config_of_a_session_created_by_a_fire(api: httpx.AsyncClient) -> None:
    uid = new_uid()
    await fire(api, uid, "early")
    response = await api.get(f"/sessions/{uid}/config")
    assert response.status_code == 200
    assert response.json() == {"tasks": {}, "webhooks": None}


# -- fire -----------------------------------------------------------------------------------


async def test_fire_into_an_unknown_session_creates_it_and_records_the_trigger(
    api: httpx.AsyncClient,
) -> None:
    uid = new_uid()
    response = await api.post(
        f"/sessions/{uid}/fire", json={"trigger": "submitted", "kwargs": {"a": [1, {"b": None}]}}
    )
    assert response.status_code == 200, response.text
    assert response.json() == {
        "uid": uid,
        "trigger": "submitted",
        "scheduled": [],
        "abandoned": [],
        "finalized": False,
    }
    status, session = await state(api, uid)
    assert status == 200
    assert session["tasks"] == {}
    assert session["latestKwargs"] == {"submitted": {"a": [1, {"b": None}]}}
    # kwargs absent or null: {}
    await fire(api, uid, "noKwargs")
    response = await api.post(
        f"/sessions/{uid}/fire", json={"trigger": "nullKwargs", "kwargs": None}
    )
    assert response.status_code == 200, response.text
    latest = (await state(api, uid))[1]["latestKwargs"]
    assert latest["noKwargs"] == {} and latest["nullKwargs"] == {}


async def test_fire_schedules_a_task_once_all_its_triggers_fired(api: httpx.AsyncClient) -> None:
    uid = new_uid()
    await configure(api, uid, {"t": {"after": ["a", "b"], "run": "app.t"}})
    assert (await fire(api, uid, "a", {"x": 1}))["scheduled"] == []
    instance = (await state(api, uid))[1]["instances"]["t#0"]
    assert instance["status"] == "unstarted"
    assert instance["kwargs"] == {"a": {"x": 1}}
    answer = await fire(api, uid, "b", {"y": 2})
    assert answer["scheduled"] == ["t#0"] and answer["abandoned"] == []
    instance = (await state(api, uid))[1]["instances"]["t#0"]
    assert instance["name"] == "t#0" and instance["task"] == "t"
    assert instance["status"] == "scheduled"
    assert instance["kwargs"] == {"a": {"x": 1}, "b": {"y": 2}}
    # Without andEvery a task gets one instance from fires in its whole life.
    assert (await fire(api, uid, "b"))["scheduled"] == []


async def test_fire_abandons_an_unstarted_instance_unless(api: httpx.AsyncClient) -> None:
    uid = new_uid()
    await configure(api, uid, {"t": {"after": ["a", "b"], "unless": ["withdrawn"], "run": "x"}})
    await fire(api, uid, "a")
    answer = await fire(api, uid, "withdrawn")
    assert answer["abandoned"] == ["t#0"] and answer["scheduled"] == []
    instance = (await state(api, uid))[1]["instances"]["t#0"]
    assert instance["status"] == "abandoned"
    assert instance["abandonState"] == ["withdrawn"]


async def test_fire_and_every_creates_an_instance_per_fire(api: httpx.AsyncClient) -> None:
    uid = new_uid()
    await configure(api, uid, {"t": {"after": [], "andEvery": "page", "run": "x"}})
    assert (await fire(api, uid, "page", {"n": 1}))["scheduled"] == ["t#0"]
    assert (await fire(api, uid, "page", {"n": 2}))["scheduled"] == ["t#1"]
    instances = (await state(api, uid))[1]["instances"]
    assert instances["t#0"]["kwargs"] == {"page": {"n": 1}}
    assert instances["t#1"]["kwargs"] == {"page": {"n": 2}}


# -- the session ----------------------------------------------------------------------------


async def test_get_session_answers_the_whole_state(api: httpx.AsyncClient) -> None:
    uid = new_uid()
    await configure(api, uid, {"t": {"after": ["a"], "run": "app.t"}})
    first = (await state(api, uid))[1]
    await fire(api, uid, "a", {"k": "v"})
    status, session = await state(api, uid)
    assert status == 200
    assert {"uid", "tasks", "instances", "latestKwargs", "finalized", "version"} <= set(session)
    assert session["uid"] == uid
    assert session["version"] == first["version"] + 1  # one change, one version
    assert session["created"] == first["created"]
    assert session["updated"] >= first["updated"]
    assert session["latestKwargs"] == {"a": {"k": "v"}}
    instance = session["instances"]["t#0"]
    assert instance["status"] == "scheduled"
    assert set(instance) >= {"name", "task", "status", "kwargs", "abandonState", "metadata"}
    assert set(instance["metadata"]["timestamps"]) >= {"created", "lastModified"}
    assert session["finalized"] is False


async def test_unresolved_tasks_say_what_they_wait_for(api: httpx.AsyncClient) -> None:
    uid = new_uid()
    await configure(
        api,
        uid,
        {
            "t_x": {"after": ["a", "b"], "run": "app.x", "maxRetries": 2},
            "t_y": {"after": ["c"], "run": "app.y"},
            "t_z": {"after": ["t_x"], "run": "app.z"},
        },
    )
    await fire(api, uid, "a")
    response = await api.get(f"/sessions/{uid}/tasks/unresolved")
    assert response.status_code == 200, response.text
    tasks = {task["name"]: task for task in response.json()["tasks"]}
    assert list(tasks) == ["t_x", "t_y", "t_z"]
    assert tasks["t_x"]["waitingFor"] == ["b"]
    assert tasks["t_y"]["waitingFor"] == ["c"]
    assert tasks["t_z"]["waitingFor"] == ["t_x"]
    # Each entry is the task's configuration, its name, what it waits for and why.
    assert tasks["t_x"]["run"] == "app.x" and tasks["t_x"]["maxRetries"] == 2
    assert tasks["t_x"]["after"] == ["a", "b"]
    for task in tasks.values():
        assert isinstance(task["reason"], str) and task["reason"]
    assert "t_x#0" in tasks["t_x"]["reason"]

    await fire(api, uid, "b")  # t_x#0 scheduled: still unresolved, waiting for nothing
    tasks = {
        t["name"]: t for t in (await api.get(f"/sessions/{uid}/tasks/unresolved")).json()["tasks"]
    }
    assert tasks["t_x"]["waitingFor"] == []
    finished = await api.post(
        f"/sessions/{uid}/instances/t_x%230/status", json={"status": "finished"}
    )
    assert finished.status_code == 200, finished.text
    tasks = {
        t["name"]: t for t in (await api.get(f"/sessions/{uid}/tasks/unresolved")).json()["tasks"]
    }
    assert list(tasks) == ["t_y", "t_z"]


async def test_delete_session(api: httpx.AsyncClient) -> None:
    uid = new_uid()
    await configure(api, uid, {"t": {"after": ["a"], "run": "app.t"}})
    await fire(api, uid, "a")
    response = await api.delete(f"/sessions/{uid}")
    assert response.status_code == 204
    assert response.content == b""
    assert (await state(api, uid))[0] == 404
    assert (await api.get(f"/sessions/{uid}/config")).status_code == 404
    assert (await api.get(f"/sessions/{uid}/instances")).status_code == 404
    # Deleting again, or a session that never existed: 204 as well.
    assert (await api.delete(f"/sessions/{uid}")).status_code == 204
    assert (await api.delete(f"/sessions/{new_uid()}")).status_code == 204
    # The UID can be used again: a fresh session, nothing of the old one.
    await fire(api, uid, "a")
    session = (await state(api, uid))[1]
    assert session["tasks"] == {} and session["instances"] == {}
    assert session["version"] == 1


# -- refusals -------------------------------------------------------------------------------

UNKNOWN_SESSION_READS = ["", "/config", "/tasks/unresolved"]


@pytest.mark.parametrize("suffix", UNKNOWN_SESSION_READS)
async def test_unknown_session_is_404(api: httpx.AsyncClient, suffix: str) -> None:
    uid = new_uid()
    response = await api.get(f"/sessions/{uid}{suffix}")
    assert_problem(response, 404, "not-found")
    assert (await state(api, uid))[0] == 404  # reading created nothing


BAD_UIDS = {
    "too-long": "a" * 201,
    "space": "a%20b",
    "braces": "a%7Bb%7D",
    "newline": "a%0A",
    "trailing-newline": "abc%0A",
    "nul": "a%00b",
    "non-ascii": "caf%C3%A9",
    "comma": "a,b",
}
SESSION_ENDPOINTS: list[tuple[str, str, Any]] = [
    ("PATCH", "/config", {"tasks": {"t": {"after": ["a"], "run": "x"}}}),
    ("PUT", "/config", {"tasks": {"t": {"after": ["a"], "run": "x"}}}),
    ("GET", "/config", None),
    ("POST", "/fire", {"trigger": "a"}),
    ("GET", "", None),
    ("GET", "/tasks/unresolved", None),
    ("DELETE", "", None),
]


@pytest.mark.parametrize(("method", "suffix", "body"), SESSION_ENDPOINTS)
@pytest.mark.parametrize("bad", list(BAD_UIDS.values()), ids=list(BAD_UIDS))
async def test_session_uid_out_of_bounds_is_422_naming_path_uid(
    api: httpx.AsyncClient, method: str, suffix: str, body: Any, bad: str
) -> None:
    response = await api.request(method, f"/sessions/{bad}{suffix}", json=body)
    assert_problem(response, 422, "validation-error", "path.uid")


async def test_uid_with_an_encoded_slash_is_422_naming_path_uid(api: httpx.AsyncClient) -> None:
    """API.md: a UID with '/' is refused with 422 (not a 404 that says the session is unknown)."""
    answers = []
    for method, suffix, body in SESSION_ENDPOINTS:
        response = await api.request(method, f"/sessions/app%2F1{suffix}", json=body)
        answers.append((method, suffix, response.status_code))
    assert all(status == 422 for _, _, status in answers), answers
    for method, suffix, body in SESSION_ENDPOINTS:
        response = await api.request(method, f"/sessions/app%2F1{suffix}", json=body)
        assert_problem(response, 422, "validation-error", "path.uid")


async def test_empty_uid_is_refused(api: httpx.AsyncClient) -> None:
    response = await api.post("/sessions//fire", json={"trigger": "a"})
    assert 400 <= response.status_code < 500
    assert response.headers["content-type"].split(";")[0] == PROBLEM


BAD_CONFIGS: dict[str, tuple[Any, str]] = {
    # names out of bounds
    "task-with-hash": ({"tasks": {"t#1": {"after": ["a"], "run": "x"}}}, "body.tasks.t#1"),
    "task-empty": ({"tasks": {"": {"after": ["a"], "run": "x"}}}, "body.tasks"),
    "task-too-long": ({"tasks": {"t" * 201: {"after": ["a"], "run": "x"}}}, "body.tasks"),
    "task-control": ({"tasks": {"t\u0007": {"after": ["a"], "run": "x"}}}, "body.tasks"),
    "after-hash": ({"tasks": {"t": {"after": ["a#b"], "run": "x"}}}, "body.tasks.t.after"),
    "after-empty-name": ({"tasks": {"t": {"after": [""], "run": "x"}}}, "body.tasks.t.after"),
    "after-too-long": ({"tasks": {"t": {"after": ["a" * 201], "run": "x"}}}, "body.tasks.t.after"),
    "after-control": ({"tasks": {"t": {"after": ["a\n"], "run": "x"}}}, "body.tasks.t.after"),
    "unless-hash": (
        {"tasks": {"t": {"after": ["a"], "unless": ["w#"], "run": "x"}}},
        "body.tasks.t.unless",
    ),
    "every-hash": (
        {"tasks": {"t": {"after": [], "andEvery": "p#1", "run": "x"}}},
        "body.tasks.t.andEvery",
    ),
    "webhook-event-hash": (
        {"tasks": {}, "webhooks": [{"url": "https://h.example.com", "events": ["a#b"]}]},
        "body.webhooks.0.events",
    ),
    # invalid configuration
    "no-run": ({"tasks": {"t": {"after": ["a"]}}}, "body.tasks.t.run"),
    "empty-run": ({"tasks": {"t": {"after": ["a"], "run": ""}}}, "body.tasks.t.run"),
    "no-after": ({"tasks": {"t": {"run": "x"}}}, "body.tasks.t.after"),
    "empty-after-no-every": ({"tasks": {"t": {"after": [], "run": "x"}}}, "body.tasks.t"),
    "empty-after-empty-every": (
        {"tasks": {"t": {"after": [], "andEvery": "", "run": "x"}}},
        "body.tasks.t",
    ),
    "with-params-scalar": (
        {"tasks": {"t": {"after": ["a"], "run": "x", "withParams": {"a": 1}}}},
        "body.tasks.t.withParams.a",
    ),
    "with-params-list-value": (
        {"tasks": {"t": {"after": ["a"], "run": "x", "withParams": {"a": [1]}}}},
        "body.tasks.t.withParams.a",
    ),
    "with-params-not-object": (
        {"tasks": {"t": {"after": ["a"], "run": "x", "withParams": ["a"]}}},
        "body.tasks.t.withParams",
    ),
    "name-directive": ({"tasks": {"t": {"after": ["a"], "run": "x", "name": "t"}}}, "body.tasks.t"),
    "every-ring": (
        {
            "tasks": {
                "t_a": {"after": [], "andEvery": "t_b", "run": "x"},
                "t_b": {"after": [], "andEvery": "t_a", "run": "x"},
            }
        },
        "body.tasks",
    ),
    "negative-max-retries": (
        {"tasks": {"t": {"after": ["a"], "run": "x", "maxRetries": -1}}},
        "body.tasks.t.maxRetries",
    ),
    # wrong types
    "tasks-list": ({"tasks": []}, "body.tasks"),
    "tasks-null": ({"tasks": None}, "body.tasks"),  # missing: only PUT (a PATCH may omit it)
    "task-string": ({"tasks": {"t": "x"}}, "body.tasks.t"),
    "after-string": ({"tasks": {"t": {"after": "a", "run": "x"}}}, "body.tasks.t.after"),
    "after-numbers": ({"tasks": {"t": {"after": [1], "run": "x"}}}, "body.tasks.t.after"),
    "run-number": ({"tasks": {"t": {"after": ["a"], "run": 5}}}, "body.tasks.t.run"),
    "unless-string": (
        {"tasks": {"t": {"after": ["a"], "unless": "w", "run": "x"}}},
        "body.tasks.t.unless",
    ),
    "every-list": (
        {"tasks": {"t": {"after": [], "andEvery": ["p"], "run": "x"}}},
        "body.tasks.t.andEvery",
    ),
    "max-retries-word": (
        {"tasks": {"t": {"after": ["a"], "run": "x", "maxRetries": "many"}}},
        "body.tasks.t.maxRetries",
    ),
    "webhooks-object": ({"tasks": {}, "webhooks": {"url": "x"}}, "body.webhooks"),
    "webhook-no-url": ({"tasks": {}, "webhooks": [{"events": []}]}, "body.webhooks.0.url"),
    "unknown-field": ({"tasks": {}, "extra": 1}, "body.extra"),
    "body-list": ([], "body"),
    "body-string": ("tasks", "body"),
    "body-null": (None, "body"),
}


@pytest.mark.parametrize("method", ["PATCH", "PUT"])
@pytest.mark.parametrize(("body", "field"), list(BAD_CONFIGS.values()), ids=list(BAD_CONFIGS))
async def test_invalid_configuration_is_422_naming_the_field_and_changes_nothing(
    api: httpx.AsyncClient, method: str, body: Any, field: str
) -> None:
    uid = new_uid()
    await configure(api, uid, {"t0": {"after": ["a"], "run": "app.t0"}})
    await fire(api, uid, "a")
    before = await state(api, uid)
    response = await api.request(method, f"/sessions/{uid}/config", json=body)
    assert_problem(response, 422, "validation-error", field)
    assert await state(api, uid) == before

    # Refused for a session that does not exist: it still does not.
    unknown = new_uid()
    response = await api.request(method, f"/sessions/{unknown}/config", json=body)
    assert_problem(response, 422, "validation-error", field)
    assert (await state(api, unknown))[0] == 404


async def test_wrong_json_types_are_not_coerced(api: httpx.AsyncClient) -> None:
    """API.md: wrong types are refused (4xx naming the field), not silently converted: a
    string or a boolean where the contract says integer."""
    uid = new_uid()
    await configure(api, uid, {"t0": {"after": ["a"], "run": "app.t0"}})
    before = await state(api, uid)
    answers = {}
    for value in ("3", True):
        body = {"tasks": {"t": {"after": ["a"], "run": "x", "maxRetries": value}}}
        response = await api.patch(f"/sessions/{uid}/config", json=body)
        answers[repr(value)] = response.status_code
    assert answers == {"'3'": 422, "True": 422}, answers
    assert await state(api, uid) == before


BAD_FIRES: dict[str, tuple[Any, str]] = {
    "trigger-hash": ({"trigger": "a#b"}, "body.trigger"),
    "trigger-empty": ({"trigger": ""}, "body.trigger"),
    "trigger-too-long": ({"trigger": "a" * 201}, "body.trigger"),
    "trigger-control": ({"trigger": "a\u0000"}, "body.trigger"),
    "trigger-number": ({"trigger": 5}, "body.trigger"),
    "trigger-null": ({"trigger": None}, "body.trigger"),
    "trigger-missing": ({"kwargs": {}}, "body.trigger"),
    "kwargs-list": ({"trigger": "a", "kwargs": [1]}, "body.kwargs"),
    "kwargs-string": ({"trigger": "a", "kwargs": "x"}, "body.kwargs"),
    "kwargs-number": ({"trigger": "a", "kwargs": 1}, "body.kwargs"),
    "kwargs-huge-int": ({"trigger": "a", "kwargs": {"n": 2**70}}, "body.kwargs"),
    "unknown-field": ({"trigger": "a", "extra": True}, "body.extra"),
    "body-list": (["a"], "body"),
    "body-string": ("a", "body"),
    "body-null": (None, "body"),
}


@pytest.mark.parametrize(("body", "field"), list(BAD_FIRES.values()), ids=list(BAD_FIRES))
async def test_invalid_fire_is_422_naming_the_field_and_changes_nothing(
    api: httpx.AsyncClient, body: Any, field: str
) -> None:
    uid = new_uid()
    await configure(api, uid, {"t": {"after": ["a"], "andEvery": "p", "run": "x"}})
    before = await state(api, uid)
    response = await api.post(f"/sessions/{uid}/fire", json=body)
    assert_problem(response, 422, "validation-error", field)
    assert await state(api, uid) == before

    unknown = new_uid()
    response = await api.post(f"/sessions/{unknown}/fire", json=body)
    assert_problem(response, 422, "validation-error", field)
    assert (await state(api, unknown))[0] == 404


MALFORMED = {
    "truncated": b'{"tasks": {',
    "missing-value": b'{"trigger": }',
    "single-quotes": b"{'trigger': 'a'}",
    "trailing-garbage": b'{"trigger": "a"} x',
    "nul": b"\x00",
    "bare-word": b"tasks",
}


@pytest.mark.parametrize(
    ("method", "suffix"), [("PATCH", "/config"), ("PUT", "/config"), ("POST", "/fire")]
)
@pytest.mark.parametrize("content", list(MALFORMED.values()), ids=list(MALFORMED))
async def test_malformed_json_is_400_and_changes_nothing(
    api: httpx.AsyncClient, method: str, suffix: str, content: bytes
) -> None:
    uid = new_uid()
    await configure(api, uid, {"t": {"after": ["a"], "andEvery": "p", "run": "x"}})
    before = await state(api, uid)
    response = await api.request(
        method,
        f"/sessions/{uid}{suffix}",
        content=content,
        headers={"content-type": "application/json"},
    )
    assert_problem(response, 400, "malformed-json", "body")
    assert await state(api, uid) == before


async def test_body_that_is_not_utf8_is_400_malformed_json(api: httpx.AsyncClient) -> None:
    """JSON is UTF-8 (RFC 8259): other bytes are malformed JSON, named as the body."""
    uid = new_uid()
    await configure(api, uid, {"t": {"after": ["a"], "andEvery": "p", "run": "x"}})
    before = await state(api, uid)
    response = await api.post(
        f"/sessions/{uid}/fire",
        content=b'{"trigger": "\xff\xfe"}',
        headers={"content-type": "application/json"},
    )
    assert_problem(response, 400, "malformed-json", "body")
    assert await state(api, uid) == before


async def test_syntactically_broken_json_is_400_malformed_json(api: httpx.AsyncClient) -> None:
    uid = new_uid()
    response = await api.post(
        f"/sessions/{uid}/fire",
        content=b'{"trigger": ',
        headers={"content-type": "application/json"},
    )
    body = assert_problem(response, 400, "malformed-json", "body")
    assert body["errors"][0]["field"] == "body"
    assert (await state(api, uid))[0] == 404


async def test_deeply_nested_json_is_refused_naming_the_body(api: httpx.AsyncClient) -> None:
    """Valid JSON too deep to parse is a 4xx problem that still names the body, not a
    nameless 'error parsing the body'."""
    uid = new_uid()
    content = b'{"trigger": "a", "kwargs": {"x": ' + b"[" * 5000 + b"]" * 5000 + b"}}"
    response = await api.post(
        f"/sessions/{uid}/fire", content=content, headers={"content-type": "application/json"}
    )
    assert 400 <= response.status_code < 500, response.text
    assert response.headers["content-type"].split(";")[0] == PROBLEM
    fields = [error["field"] for error in response.json()["errors"]]
    assert any(f == "body" or f.startswith("body.") for f in fields), response.text
    assert (await state(api, uid))[0] == 404


async def test_missing_body_is_422(api: httpx.AsyncClient) -> None:
    uid = new_uid()
    for method, suffix in (("PATCH", "/config"), ("PUT", "/config"), ("POST", "/fire")):
        response = await api.request(method, f"/sessions/{uid}{suffix}")
        assert_problem(response, 422, "validation-error", "body")
    assert (await state(api, uid))[0] == 404


# -- body size limit ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_limit_url(redis_url: str) -> Iterator[str]:
    """A server with a 1 KiB body limit (TRIGGERS_MAX_BODY_BYTES)."""
    with LiveServer(api_settings(redis_url, max_body_bytes=1024)) as server:
        yield server.url


@pytest.fixture
async def small(small_limit_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=small_limit_url, timeout=10) as client:
        yield client


def fire_body(size: int) -> bytes:
    """A valid fire body of exactly ``size`` bytes."""
    head, tail = b'{"trigger": "a", "kwargs": {"pad": "', b'"}}'
    return head + b"x" * (size - len(head) - len(tail)) + tail


def config_body(size: int) -> bytes:
    head = b'{"tasks": {"t": {"after": ["a"], "run": "x", "pad": "'
    tail = b'"}}}'
    return head + b"x" * (size - len(head) - len(tail)) + tail


async def test_bodies_over_the_limit_are_413_and_change_nothing(
    small: httpx.AsyncClient,
) -> None:
    uid = new_uid()
    await configure(small, uid, {"t": {"after": ["a"], "andEvery": "p", "run": "x"}})
    before = await state(small, uid)
    json_type = {"content-type": "application/json"}
    for method, suffix, content in (
        ("POST", "/fire", fire_body(1025)),
        ("POST", "/fire", fire_body(50_000)),
        ("PATCH", "/config", config_body(1025)),
        ("PUT", "/config", config_body(4096)),
    ):
        response = await small.request(
            method, f"/sessions/{uid}{suffix}", content=content, headers=json_type
        )
        body = assert_problem(response, 413, "payload-too-large")
        assert "1024" in body["detail"]
    assert await state(small, uid) == before
    unknown = new_uid()
    response = await small.post(
        f"/sessions/{unknown}/fire", content=fire_body(2000), headers=json_type
    )
    assert_problem(response, 413, "payload-too-large")
    assert (await state(small, unknown))[0] == 404
    # At the limit: accepted.
    response = await small.post(f"/sessions/{uid}/fire", content=fire_body(1024), headers=json_type)
    assert response.status_code == 200, response.text


async def test_chunked_bodies_over_the_limit_are_413_and_change_nothing(
    small: httpx.AsyncClient,
) -> None:
    """A body sent without Content-Length (chunked) is counted as it arrives."""
    uid = new_uid()
    await configure(small, uid, {"t": {"after": ["a"], "andEvery": "p", "run": "x"}})
    before = await state(small, uid)
    content = fire_body(4096)

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(content), 512):
            yield content[start : start + 512]

    response = await small.post(
        f"/sessions/{uid}/fire", content=chunks(), headers={"content-type": "application/json"}
    )
    assert "content-length" not in response.request.headers
    assert_problem(response, 413, "payload-too-large")
    assert await state(small, uid) == before


async def test_default_body_limit_is_one_mebibyte(api: httpx.AsyncClient) -> None:
    uid = new_uid()
    json_type = {"content-type": "application/json"}
    response = await api.post(
        f"/sessions/{uid}/fire", content=fire_body(MIB + 1), headers=json_type
    )
    assert_problem(response, 413, "payload-too-large")
    assert (await state(api, uid))[0] == 404
    response = await api.post(f"/sessions/{uid}/fire", content=fire_body(MIB), headers=json_type)
    assert response.status_code == 200, response.text
