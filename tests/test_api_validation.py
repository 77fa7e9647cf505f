"""Issue 8 items 2 and 3, issue 14 item 8: what could only fail later is refused at the door
(422 naming the field, nothing stored), through real HTTP against a real Redis."""

from __future__ import annotations

import base64
import uuid
from typing import Any

import httpx
import pytest

from service.engine import Engine, InvalidError
from tests.test_api_sessions import assert_problem


def new_uid() -> str:
    return f"v-{uuid.uuid4().hex[:12]}"


TASK = {"after": ["go"], "run": "app.notify"}
SECRET = "whsec_" + base64.b64encode(b"s" * 32).decode()


async def refused_config(
    api: httpx.AsyncClient, body: dict[str, Any], field: str, method: str = "PUT"
) -> dict[str, Any]:
    """The configuration is refused naming ``field`` and the session was not created."""
    uid = new_uid()
    response = await api.request(method, f"/sessions/{uid}/config", json=body)
    problem = assert_problem(response, 422, "validation-error", field)
    assert (await api.get(f"/sessions/{uid}")).status_code == 404
    return problem


@pytest.mark.parametrize("using", ["nope", "webhooks", "Dramatiq"])
async def test_using_must_name_a_registered_runner(api: httpx.AsyncClient, using: str) -> None:
    body = {"tasks": {"t": {**TASK, "using": using}}}
    problem = await refused_config(api, body, "body.tasks.t.using")
    assert "dramatiq" in problem["errors"][0]["message"]


async def test_registered_runners_are_accepted(api: httpx.AsyncClient) -> None:
    for using in ("dramatiq", "external"):
        response = await api.put(
            f"/sessions/{new_uid()}/config", json={"tasks": {"t": {**TASK, "using": using}}}
        )
        assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    "run",
    [
        "ftp://example.com/file",
        "HTTP://example.com/x",
        "file:///etc/passwd",
        "http://user:pw@example.com/x",
        "http://tasks.internal:9000@169.254.169.254/latest/",
        "http://example.com:99999/x",
        "https://",
        "not a task",
        "app..notify",
        "9lives",
    ],
)
async def test_run_must_be_an_http_url_or_a_python_task_name(
    api: httpx.AsyncClient, run: str
) -> None:
    await refused_config(api, {"tasks": {"t": {**TASK, "run": run}}}, "body.tasks.t.run")


@pytest.mark.parametrize(
    "run", ["echo", "app.notify", "pkg.mod.compare_responses", "my-task", "vérifier",
            "https://tasks.example.com/page?x=1", "http://127.0.0.1:9000/t"],
)  # fmt: skip
async def test_valid_runs_are_accepted(api: httpx.AsyncClient, run: str) -> None:
    response = await api.put(
        f"/sessions/{new_uid()}/config", json={"tasks": {"t": {**TASK, "run": run}}}
    )
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    ("key", "known"),
    [("unles", "unless"), ("afterr", "after"), ("andevery", "andEvery"),
     ("maxRetrys", "maxRetries"), ("withParam", "withParams"), ("readTimout", "readTimeout"),
     ("runs", "run"), ("Using", "using"), ("befor", "after"), ("before", "after")],
)  # fmt: skip
async def test_a_misspelt_directive_is_refused_with_a_suggestion(
    api: httpx.AsyncClient, key: str, known: str
) -> None:
    body = {"tasks": {"t": {**TASK, key: ["x"]}}}
    problem = await refused_config(api, body, "body.tasks.t")
    assert f"did you mean {known!r}" in problem["errors"][0]["message"], problem


async def test_custom_directives_far_from_known_ones_stay(api: httpx.AsyncClient) -> None:
    uid = new_uid()
    custom = {"team": "ops", "priority": 2, "owner": "x", "queue": "q"}
    response = await api.put(f"/sessions/{uid}/config", json={"tasks": {"t": {**TASK, **custom}}})
    assert response.status_code == 200, response.text
    assert response.json()["tasks"]["t"].items() >= custom.items()


@pytest.mark.parametrize(
    ("hook", "field"),
    [
        ({"url": "not a url"}, "body.webhooks.0.url"),
        ({"url": "http://hooks.example.com:99999/x"}, "body.webhooks.0.url"),
        ({"url": "ftp://hooks.example.com/x"}, "body.webhooks.0.url"),
        ({"url": "https://user@hooks.example.com/x"}, "body.webhooks.0.url"),
        ({"url": "https://hooks.example.com/x", "events": ["sessionFinalised"]},
         "body.webhooks.0.events"),
        ({"url": "https://hooks.example.com/x", "events": ["t"]}, "body.webhooks.0.events"),
        ({"url": "https://hooks.example.com/x", "secret": "s3cr3t"}, "body.webhooks.0.secret"),
        ({"url": "https://hooks.example.com/x", "secret": "whsec_c2hvcnQ="},
         "body.webhooks.0.secret"),
    ],
)  # fmt: skip
async def test_webhook_subscriptions_that_could_never_deliver_are_refused(
    api: httpx.AsyncClient, hook: dict[str, Any], field: str
) -> None:
    for method in ("PUT", "PATCH"):
        await refused_config(api, {"tasks": {"t": TASK}, "webhooks": [hook]}, field, method)


async def test_a_patch_of_webhooks_alone_keeps_the_tasks(api: httpx.AsyncClient) -> None:
    uid = new_uid()
    hook = {"url": "https://hooks.example.com/a", "events": ["*"]}
    assert (
        await api.put(f"/sessions/{uid}/config", json={"tasks": {"t": TASK}})
    ).status_code == 200
    response = await api.patch(f"/sessions/{uid}/config", json={"webhooks": [hook]})
    assert response.status_code == 200, response.text
    assert response.json() == {"tasks": {"t": {**TASK, "after": ["go"], "unless": [],
                               "andEvery": None, "withParams": {}, "using": "dramatiq",
                               "maxRetries": 3}}, "webhooks": [hook]}  # fmt: skip
    other = {"url": "https://hooks.example.com/b", "events": ["instanceFailed"]}
    response = await api.patch(f"/sessions/{uid}/config", json={"webhooks": [other]})
    assert response.json()["webhooks"] == [other]  # the list is replaced, not appended to
    response = await api.patch(f"/sessions/{uid}/config", json={"tasks": {"u": TASK}})
    assert response.json()["webhooks"] == [other]  # absent: kept
    assert set(response.json()["tasks"]) == {"t", "u"}


async def test_a_subscription_secret_is_write_only(api: httpx.AsyncClient) -> None:
    uid = new_uid()
    hook = {"url": "https://hooks.example.com/a", "events": ["*"], "secret": SECRET}
    answers = [await api.put(f"/sessions/{uid}/config", json={"tasks": {"t": TASK},
                                                              "webhooks": [hook]})]  # fmt: skip
    answers.append(await api.get(f"/sessions/{uid}/config"))
    answers.append(await api.get(f"/sessions/{uid}"))
    for answer in answers:
        assert answer.status_code == 200, answer.text
        assert "secret" not in answer.text and SECRET not in answer.text
        assert answer.json()["webhooks"] == [{"url": hook["url"], "events": ["*"]}]


# -- 14.8: names cannot collide with the outbox's event markers ----------------------------


@pytest.mark.parametrize("name", ["@sessionFinalized", "@x"])
async def test_task_names_starting_with_at_are_refused(api: httpx.AsyncClient, name: str) -> None:
    await refused_config(api, {"tasks": {name: TASK}}, "body.tasks")


async def test_names_with_an_at_elsewhere_stay_valid(api: httpx.AsyncClient) -> None:
    uid = new_uid()
    tasks = {"a@b": {"after": ["@event"], "run": "echo"}}
    response = await api.put(f"/sessions/{uid}/config", json={"tasks": tasks})
    assert response.status_code == 200, response.text


# -- 8.3: UIDs "." and ".."; non-finite numbers ---------------------------------------------


@pytest.mark.parametrize("uid", ["%2E", "%2E%2E", "%2e%2e"])
async def test_dot_segment_uids_are_refused(api_url: str, uid: str) -> None:
    async with httpx.AsyncClient() as client:
        for method, tail, body in [("POST", "/fire", {"trigger": "a"}),
                                   ("PUT", "/config", {"tasks": {"t": TASK}}),
                                   ("GET", "", None)]:  # fmt: skip
            request = client.build_request(method, f"{api_url}/sessions/x{tail}", json=body)
            request.url = request.url.copy_with(raw_path=f"/sessions/{uid}{tail}".encode())
            response = await client.send(request)
            assert_problem(response, 422, "validation-error", "path.uid")


async def test_uids_with_dots_that_are_not_dot_segments_stay_valid(api: httpx.AsyncClient) -> None:
    for uid in ("...", ".a", "a.", "..b", "a..b"):
        response = await api.post(f"/sessions/{uid}/fire", json={"trigger": "a"})
        assert response.status_code == 200, (uid, response.text)


@pytest.mark.parametrize(
    "number", ["NaN", "Infinity", "-Infinity", "1e400", "-1E+400", "1" * 400 + ".5"]
)
async def test_non_finite_numbers_are_refused_and_nothing_is_stored(
    api: httpx.AsyncClient, number: str
) -> None:
    uid = new_uid()
    cases = [
        ("POST", "/fire", '{"trigger": "a", "kwargs": {"x": [1, %s]}}', "body.kwargs.x.1"),
        ("PUT", "/config",
         '{"tasks": {"t": {"after": ["a"], "run": "echo", "withParams": {"a": {"n": %s}}}}}',
         "body.tasks.t.withParams.a.n"),
        ("PUT", "/config",
         '{"tasks": {"t": {"after": ["a"], "run": "echo", "maxRetries": %s}}}',
         "body.tasks.t.maxRetries"),
    ]  # fmt: skip
    for method, tail, template, field in cases:
        response = await api.request(
            method, f"/sessions/{uid}{tail}", content=template % number,
            headers={"Content-Type": "application/json"},
        )  # fmt: skip
        assert_problem(response, 422, "validation-error", field)
    assert (await api.get(f"/sessions/{uid}")).status_code == 404


async def test_non_finite_numbers_in_metadata_and_status_bodies_are_refused(
    api: httpx.AsyncClient,
) -> None:
    uid = new_uid()
    tasks = {"t": {"after": ["a"], "run": "echo", "using": "external"}}
    await api.put(f"/sessions/{uid}/config", json={"tasks": tasks})
    assert (await api.post(f"/sessions/{uid}/fire", json={"trigger": "a"})).status_code == 200
    before = (await api.get(f"/sessions/{uid}/instances/t%230")).json()
    json_headers = {"Content-Type": "application/json"}
    for method, tail, content, field in [
        ("PATCH", "/metadata", '{"score": NaN}', "body.score"),
        ("POST", "/status", '{"status": "finished", "metadata": {"r": 1e999}}',
         "body.metadata.r"),
    ]:  # fmt: skip
        response = await api.request(
            method, f"/sessions/{uid}/instances/t%230{tail}", content=content,
            headers=json_headers,
        )  # fmt: skip
        assert_problem(response, 422, "validation-error", field)
    assert (await api.get(f"/sessions/{uid}/instances/t%230")).json() == before


async def test_big_but_finite_numbers_and_words_like_nan_in_strings_stay(
    api: httpx.AsyncClient,
) -> None:
    uid = new_uid()
    content = '{"trigger": "a", "kwargs": {"s": "NaN Infinity 1e400", "n": 1e300, "m": 1E-400}}'
    response = await api.post(
        f"/sessions/{uid}/fire", content=content, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 200, response.text
    latest = (await api.get(f"/sessions/{uid}")).json()["latestKwargs"]["a"]
    assert latest == {"s": "NaN Infinity 1e400", "n": 1e300, "m": 0.0}


async def test_a_put_without_tasks_is_refused(api: httpx.AsyncClient) -> None:
    await refused_config(api, {"webhooks": []}, "body.tasks", "PUT")


# -- 8.6: engine-owned metadata --------------------------------------------------------------

ENGINE_KEYS = ["depth", "parent", "attempt", "cooldown", "actualKwargs", "timestamps"]
OUTCOME_KEYS = ["result", "exceptionType", "exceptionInfo", "exceptionContext", "logLevel",
                "cascade"]  # fmt: skip


async def _external_instance(api: httpx.AsyncClient) -> str:
    uid = new_uid()
    tasks = {"t": {"after": ["a"], "run": "echo", "using": "external", "maxRetries": 1}}
    assert (await api.put(f"/sessions/{uid}/config", json={"tasks": tasks})).status_code == 200
    assert (await api.post(f"/sessions/{uid}/fire", json={"trigger": "a"})).status_code == 200
    return uid


@pytest.mark.parametrize("key", ENGINE_KEYS + OUTCOME_KEYS)
async def test_metadata_the_engine_keeps_cannot_be_merged(api: httpx.AsyncClient, key: str) -> None:
    uid = await _external_instance(api)
    url = f"/sessions/{uid}/instances/t%230"
    before = (await api.get(url)).json()
    response = await api.patch(f"{url}/metadata", json={key: -1000000, "note": "x"})
    problem = assert_problem(response, 422, "validation-error")
    assert any(error["field"].endswith(f".{key}") for error in problem["errors"]), problem
    assert (await api.get(url)).json() == before


@pytest.mark.parametrize("key", ENGINE_KEYS)
async def test_a_status_change_cannot_write_engine_keys_either(
    api: httpx.AsyncClient, key: str
) -> None:
    uid = await _external_instance(api)
    response = await api.post(f"/sessions/{uid}/instances/t%230/status",
                              json={"status": "failed", "metadata": {key: -1000000}})  # fmt: skip
    assert_problem(response, 422, "validation-error", f"body.metadata.{key}")


async def test_the_retry_budget_cannot_be_escaped_through_metadata(engine: Engine) -> None:
    """depth: -1000000 would have let a task retry for ever; the budget holds."""
    uid = new_uid()
    await engine.configure(uid, {"tasks": {"t": {"after": ["a"], "run": "x", "maxRetries": 1}}})
    await engine.fire(uid, "a")
    with pytest.raises(InvalidError):
        await engine.set_metadata(uid, "t#0", {"depth": -1000000})
    claim = await engine.claim(uid, "t#0")
    assert claim.token is not None
    with pytest.raises(InvalidError):  # a task's own retry metadata cannot carry it either
        await engine.retry(uid, "t#0", claim.token, metadata={"depth": "-1000000"})
    outcome = await engine.retry(uid, "t#0", claim.token)
    assert outcome.retried and outcome.clone == "t#1"
    claim = await engine.claim(uid, "t#1")
    assert claim.token is not None
    outcome = await engine.retry(uid, "t#1", claim.token)
    assert outcome.retried is False
    assert (await engine.instance(uid, "t#1")).metadata["exceptionType"] == (
        "triggers.MaxRetriesExceeded"
    )


async def test_operator_keys_and_logs_resolved_stay_writable(api: httpx.AsyncClient) -> None:
    uid = await _external_instance(api)
    response = await api.patch(f"/sessions/{uid}/instances/t%230/metadata",
                               json={"reviewedBy": "ops", "logsResolved": True})  # fmt: skip
    assert response.status_code == 200, response.text
    assert response.json()["metadata"]["reviewedBy"] == "ops"
