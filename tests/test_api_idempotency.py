"""Idempotency-Key on every mutating endpoint, through real HTTP:

* the same key with the same request returns the stored first answer (errors included) without
  doing the work again;
* while the first request is still in flight, a repeat gets 409;
* the same key with another request gets 422;
* 50 identical requests sent in parallel with one key have exactly one effect.

"In flight" is simulated by holding the lock the store takes for a key (service/api/
idempotency.py: the record key of the key's digest, plus ":lock"), as a first request does while
it runs.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from service.engine import Engine
from service.engine.keys import idempotency_key
from tests.conftest import LiveServer, api_settings, engine_on

PROBLEM = "application/problem+json"

CHAIN = {
    "t_a": {"after": ["go"], "run": "X"},
    # andEvery: every cascade of t_a makes a new instance, so a repeated cascade would show.
    "t_b": {"after": [], "andEvery": "t_a", "run": "P"},
    "t_p": {"after": [], "andEvery": "p", "run": "P"},
}


def new_uid(tag: str = "k") -> str:
    return f"{tag}-{uuid.uuid4().hex[:12]}"


def new_key() -> str:
    return f"key-{uuid.uuid4()}"


def assert_problem(
    response: httpx.Response, status: int, kind: str, field: str | None = None
) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].split(";")[0] == PROBLEM, response.headers
    body = response.json()
    assert body["type"] == f"/problems/{kind}", body
    assert body["status"] == status, body
    if field is not None:
        assert field in [error["field"] for error in body["errors"]], body
    return body


@pytest.fixture(scope="module")
def server(redis_url: str) -> Iterator[tuple[str, str]]:
    settings = api_settings(redis_url)
    with LiveServer(settings) as live:
        yield live.url, settings.key_prefix


@pytest.fixture(scope="module")
async def engine(server: tuple[str, str], redis_url: str) -> AsyncIterator[Engine]:
    async with engine_on(redis_url, server[1]) as engine:
        yield engine


@pytest.fixture
async def api(server: tuple[str, str]) -> AsyncIterator[httpx.AsyncClient]:
    limits = httpx.Limits(max_connections=100, max_keepalive_connections=100)
    async with httpx.AsyncClient(base_url=server[0], timeout=30, limits=limits) as client:
        yield client


async def state(api: httpx.AsyncClient, uid: str) -> tuple[int, Any]:
    response = await api.get(f"/sessions/{uid}")
    assert response.status_code in (200, 404), response.text
    return response.status_code, response.json()


async def failed_chain(api: httpx.AsyncClient, engine: Engine) -> str:
    """t_a#0 failed; t_b makes an instance per cascade of t_a; t_p one per fire of p."""
    uid = new_uid()
    response = await api.patch(f"/sessions/{uid}/config", json={"tasks": CHAIN})
    assert response.status_code == 200, response.text
    response = await api.post(f"/sessions/{uid}/fire", json={"trigger": "go", "kwargs": {"a": 1}})
    assert response.json()["scheduled"] == ["t_a#0"]
    await make_failed(engine, uid, "t_a#0")
    return uid


async def make_failed(engine: Engine, uid: str, name: str) -> None:
    claim = await engine.claim(uid, name)
    assert claim.state == "claimed" and claim.token is not None, claim
    await engine.fail(uid, name, claim.token, "builtins.RuntimeError", "boom")


def instances_of(session: dict[str, Any], task: str) -> list[str]:
    return sorted(name for name in session["instances"] if name.startswith(task + "#"))


# -- same key, same request: the first answer, the work done once -----------------------------


async def repeat(
    api: httpx.AsyncClient, method: str, path: str, body: Any, key: str
) -> tuple[httpx.Response, httpx.Response]:
    headers = {"Idempotency-Key": key}
    first = await api.request(method, path, json=body, headers=headers)
    second = await api.request(method, path, json=body, headers=headers)
    return first, second


def same_answer(first: httpx.Response, second: httpx.Response) -> None:
    assert second.status_code == first.status_code, (first.text, second.text)
    assert second.content == first.content or second.json() == first.json()


async def test_fire_repeated_with_its_key_fires_once(
    api: httpx.AsyncClient, engine: Engine
) -> None:
    uid = await failed_chain(api, engine)
    path = f"/sessions/{uid}/fire"
    key = new_key()
    first = await api.post(
        path, json={"trigger": "p", "kwargs": {"n": 1}}, headers={"Idempotency-Key": key}
    )
    assert first.status_code == 200, first.text
    assert first.json()["scheduled"] == ["t_p#0"]
    after_first = (await state(api, uid))[1]
    for _ in range(3):
        again = await api.post(
            path, json={"trigger": "p", "kwargs": {"n": 1}}, headers={"Idempotency-Key": key}
        )
        same_answer(first, again)
    assert (await state(api, uid))[1] == after_first  # nothing done again
    # Without the key the same request is new work.
    fresh = await api.post(path, json={"trigger": "p", "kwargs": {"n": 1}})
    assert fresh.json()["scheduled"] == ["t_p#1"]


async def test_replay_repeated_with_its_key_replays_once(
    api: httpx.AsyncClient, engine: Engine
) -> None:
    uid = await failed_chain(api, engine)
    path = f"/sessions/{uid}/instances/t_a%230/replay"
    first, second = await repeat(api, "POST", path, {"kwargs": {"go": {"b": 2}}}, new_key())
    assert first.status_code == 200, first.text
    assert first.json() == {"replayed": "t_a#0", "instance": "t_a#1"}
    same_answer(first, second)
    session = (await state(api, uid))[1]
    assert instances_of(session, "t_a") == ["t_a#0", "t_a#1"]
    # Still one clone after the clone failed too (the repeat is not a new replay of t_a#0).
    await make_failed(engine, uid, "t_a#1")
    before = await state(api, uid)
    third = await api.post(
        path,
        json={"kwargs": {"go": {"b": 2}}},
        headers={"Idempotency-Key": first.request.headers["idempotency-key"]},
    )
    same_answer(first, third)
    assert await state(api, uid) == before


async def test_skip_repeated_with_its_key_cascades_once(
    api: httpx.AsyncClient, engine: Engine
) -> None:
    uid = await failed_chain(api, engine)
    path = f"/sessions/{uid}/instances/t_a%230/skip"
    first, second = await repeat(
        api, "POST", path, {"cascade": True, "result": {"r": 1}}, new_key()
    )
    assert first.status_code == 200, first.text
    same_answer(first, second)
    session = (await state(api, uid))[1]
    assert instances_of(session, "t_b") == ["t_b#0"]
    assert session["instances"]["t_b#0"]["kwargs"] == {"t_a": {"r": 1}}


async def test_status_repeated_with_its_key_cascades_once(
    api: httpx.AsyncClient, engine: Engine
) -> None:
    uid = await failed_chain(api, engine)
    path = f"/sessions/{uid}/instances/t_a%230/status"
    body = {
        "status": "finished",
        "metadata": {"note": "manual"},
        "cascade": True,
        "cascadeKwargs": {"x": 1},
    }
    first, second = await repeat(api, "POST", path, body, new_key())
    assert first.status_code == 200, first.text
    same_answer(first, second)
    session = (await state(api, uid))[1]
    assert instances_of(session, "t_b") == ["t_b#0"]
    assert session["instances"]["t_a#0"]["status"] == "finished"


async def test_config_repeated_with_its_key_is_not_applied_again(
    api: httpx.AsyncClient, engine: Engine
) -> None:
    uid = await failed_chain(api, engine)
    for method in ("PATCH", "PUT"):
        key = new_key()
        body = {"tasks": {**CHAIN, "t_c": {"after": ["c"], "run": "v1"}}}
        first = await api.request(
            method, f"/sessions/{uid}/config", json=body, headers={"Idempotency-Key": key}
        )
        assert first.status_code == 200, first.text
        # Changed since by a request without a key.
        changed = await api.patch(
            f"/sessions/{uid}/config", json={"tasks": {"t_c": {"after": ["c"], "run": "v2"}}}
        )
        assert changed.status_code == 200
        before = await state(api, uid)
        again = await api.request(
            method, f"/sessions/{uid}/config", json=body, headers={"Idempotency-Key": key}
        )
        same_answer(first, again)
        assert again.json()["tasks"]["t_c"]["run"] == "v1"  # the stored first answer
        assert await state(api, uid) == before  # ... and the configuration was not set again
        assert before[1]["tasks"]["t_c"]["run"] == "v2"


async def test_metadata_and_logs_resolved_repeated_with_their_key_are_not_applied_again(
    api: httpx.AsyncClient, engine: Engine
) -> None:
    uid = await failed_chain(api, engine)
    base = f"/sessions/{uid}/instances/t_a%230"
    key = new_key()
    first = await api.patch(f"{base}/metadata", json={"n": 1}, headers={"Idempotency-Key": key})
    assert first.status_code == 200, first.text
    logs_key = new_key()
    logs = await api.post(f"{base}/logs-resolved", headers={"Idempotency-Key": logs_key})
    assert logs.status_code == 200, logs.text
    assert logs.json()["metadata"]["logsResolved"] is True
    changed = await api.patch(f"{base}/metadata", json={"n": 2, "logsResolved": False})
    assert changed.status_code == 200
    before = await state(api, uid)
    again = await api.patch(f"{base}/metadata", json={"n": 1}, headers={"Idempotency-Key": key})
    same_answer(first, again)
    assert again.json()["metadata"]["n"] == 1
    logs_again = await api.post(f"{base}/logs-resolved", headers={"Idempotency-Key": logs_key})
    same_answer(logs, logs_again)
    assert await state(api, uid) == before
    assert before[1]["instances"]["t_a#0"]["metadata"]["n"] == 2
    assert before[1]["instances"]["t_a#0"]["metadata"]["logsResolved"] is False


async def test_delete_repeated_with_its_key_deletes_once(api: httpx.AsyncClient) -> None:
    uid = new_uid()
    key = new_key()
    await api.post(f"/sessions/{uid}/fire", json={"trigger": "a"})
    first = await api.delete(f"/sessions/{uid}", headers={"Idempotency-Key": key})
    assert first.status_code == 204
    # The session is created again; repeating the first DELETE does not delete it.
    await api.post(f"/sessions/{uid}/fire", json={"trigger": "b"})
    before = await state(api, uid)
    again = await api.delete(f"/sessions/{uid}", headers={"Idempotency-Key": key})
    assert again.status_code == 204
    assert await state(api, uid) == before
    assert before[0] == 200


# -- errors are stored too ------------------------------------------------------------------


async def test_a_404_is_answered_again_after_the_instance_exists(
    api: httpx.AsyncClient, engine: Engine
) -> None:
    uid = new_uid()
    key = new_key()
    path = f"/sessions/{uid}/instances/t_a%230/replay"
    first = await api.post(path, json={}, headers={"Idempotency-Key": key})
    assert_problem(first, 404, "not-found")
    # Now the session and a failed t_a#0 exist.
    response = await api.patch(f"/sessions/{uid}/config", json={"tasks": CHAIN})
    assert response.status_code == 200
    await api.post(f"/sessions/{uid}/fire", json={"trigger": "go"})
    await make_failed(engine, uid, "t_a#0")
    before = await state(api, uid)
    again = await api.post(path, json={}, headers={"Idempotency-Key": key})
    assert_problem(again, 404, "not-found")
    assert again.json() == first.json()
    assert await state(api, uid) == before  # not replayed
    # Another key (or none) does the work.
    assert (
        await api.post(path, json={}, headers={"Idempotency-Key": new_key()})
    ).status_code == 200


async def test_a_404_for_an_unknown_session_is_answered_again_after_it_exists(
    api: httpx.AsyncClient, engine: Engine
) -> None:
    uid = new_uid()
    key = new_key()
    path = f"/sessions/{uid}/instances/t_a%230/status"
    body = {"status": "finished", "cascade": True}
    first = await api.post(path, json=body, headers={"Idempotency-Key": key})
    assert_problem(first, 404, "not-found")
    assert (await state(api, uid))[0] == 404
    response = await api.patch(f"/sessions/{uid}/config", json={"tasks": CHAIN})
    assert response.status_code == 200
    await api.post(f"/sessions/{uid}/fire", json={"trigger": "go"})
    before = await state(api, uid)
    again = await api.post(path, json=body, headers={"Idempotency-Key": key})
    assert again.status_code == 404 and again.json() == first.json()
    assert await state(api, uid) == before


async def test_a_409_is_answered_again_after_the_instance_failed(
    api: httpx.AsyncClient, engine: Engine
) -> None:
    uid = new_uid()
    response = await api.patch(f"/sessions/{uid}/config", json={"tasks": CHAIN})
    assert response.status_code == 200
    await api.post(f"/sessions/{uid}/fire", json={"trigger": "go"})  # t_a#0 scheduled
    key = new_key()
    path = f"/sessions/{uid}/instances/t_a%230/skip"
    first = await api.post(path, json={"cascade": True}, headers={"Idempotency-Key": key})
    assert_problem(first, 409, "conflict")
    await make_failed(engine, uid, "t_a#0")
    before = await state(api, uid)
    again = await api.post(path, json={"cascade": True}, headers={"Idempotency-Key": key})
    assert_problem(again, 409, "conflict")
    assert again.json() == first.json()
    assert await state(api, uid) == before
    assert before[1]["instances"]["t_a#0"]["status"] == "failed"


# -- same key, another request: 422 -----------------------------------------------------------


async def test_same_key_with_another_body_is_422_and_changes_nothing(
    api: httpx.AsyncClient, engine: Engine
) -> None:
    uid = await failed_chain(api, engine)
    key = new_key()
    first = await api.post(
        f"/sessions/{uid}/fire",
        json={"trigger": "p", "kwargs": {"n": 1}},
        headers={"Idempotency-Key": key},
    )
    assert first.status_code == 200
    before = await state(api, uid)
    for method, path, body in (
        ("POST", f"/sessions/{uid}/fire", {"trigger": "p", "kwargs": {"n": 2}}),
        ("POST", f"/sessions/{uid}/fire", {"trigger": "q"}),
        ("PATCH", f"/sessions/{uid}/config", {"tasks": {}}),  # another endpoint
        ("POST", f"/sessions/{uid}/instances/t_a%230/replay", {}),
        ("DELETE", f"/sessions/{uid}", None),
    ):
        response = await api.request(method, path, json=body, headers={"Idempotency-Key": key})
        assert_problem(response, 422, "idempotency-key-reused", "header.Idempotency-Key")
    assert await state(api, uid) == before
    # The first request still gets its answer.
    again = await api.post(
        f"/sessions/{uid}/fire",
        json={"trigger": "p", "kwargs": {"n": 1}},
        headers={"Idempotency-Key": key},
    )
    same_answer(first, again)


async def test_same_key_with_another_body_after_an_error_is_422(
    api: httpx.AsyncClient, engine: Engine
) -> None:
    uid = await failed_chain(api, engine)
    key = new_key()
    first = await api.post(
        f"/sessions/{uid}/instances/t_zz%230/replay", json={}, headers={"Idempotency-Key": key}
    )
    assert_problem(first, 404, "not-found")
    before = await state(api, uid)
    response = await api.post(
        f"/sessions/{uid}/instances/t_zz%230/replay",
        json={"kwargs": {}},
        headers={"Idempotency-Key": key},
    )
    assert_problem(response, 422, "idempotency-key-reused", "header.Idempotency-Key")
    assert await state(api, uid) == before


# -- in flight: 409 ----------------------------------------------------------------------------


def lock_key(prefix: str, uid: str, key: str) -> str:
    """The lock the store holds while the first request with ``key`` runs."""
    digest = hashlib.sha256(key.encode()).hexdigest()
    return idempotency_key(uid, digest, prefix) + ":lock"


async def test_a_repeat_while_the_first_is_in_flight_is_409_and_changes_nothing(
    api: httpx.AsyncClient, engine: Engine, server: tuple[str, str]
) -> None:
    uid = await failed_chain(api, engine)
    key = new_key()
    lock = lock_key(server[1], uid, key)
    await engine.client.set(lock, "1", px=60_000)  # the first request is running
    before = await state(api, uid)
    for method, path, body in (
        ("POST", f"/sessions/{uid}/fire", {"trigger": "p"}),
        ("POST", f"/sessions/{uid}/instances/t_a%230/replay", {}),
        ("PATCH", f"/sessions/{uid}/config", {"tasks": {}}),
        ("DELETE", f"/sessions/{uid}", None),
    ):
        response = await api.request(method, path, json=body, headers={"Idempotency-Key": key})
        assert_problem(response, 409, "idempotency-in-flight")
        assert "retry-after" in response.headers
    assert await state(api, uid) == before
    # The first request ends (its lock goes): the key can be used.
    await engine.client.delete(lock)
    response = await api.post(
        f"/sessions/{uid}/fire", json={"trigger": "p"}, headers={"Idempotency-Key": key}
    )
    assert response.status_code == 200, response.text
    assert response.json()["scheduled"] == ["t_p#0"]
    assert await engine.client.exists(lock) == 0  # released after the request


# -- 50 in parallel ------------------------------------------------------------------------------


async def test_fifty_parallel_fires_with_one_key_have_exactly_one_effect(
    api: httpx.AsyncClient, engine: Engine
) -> None:
    uid = await failed_chain(api, engine)
    before = (await state(api, uid))[1]
    key = new_key()
    body = {"trigger": "p", "kwargs": {"order": 42}}

    async def one() -> httpx.Response:
        return await api.post(f"/sessions/{uid}/fire", json=body, headers={"Idempotency-Key": key})

    # Open 50 connections first, so that the 50 fires really arrive together.
    await asyncio.gather(*(api.get("/healthz") for _ in range(50)))
    answers = await asyncio.gather(*(one() for _ in range(50)))
    statuses = sorted(answer.status_code for answer in answers)
    assert set(statuses) <= {200, 409}, statuses
    successes = [answer for answer in answers if answer.status_code == 200]
    assert successes, statuses
    for answer in successes:
        assert answer.json() == {
            "uid": uid,
            "trigger": "p",
            "scheduled": ["t_p#0"],
            "abandoned": [],
            "finalized": False,
        }
    for answer in answers:
        if answer.status_code == 409:
            assert_problem(answer, 409, "idempotency-in-flight")

    after = (await state(api, uid))[1]
    assert instances_of(after, "t_p") == ["t_p#0"]  # exactly one effect
    assert after["version"] == before["version"] + 1
    assert after["latestKwargs"]["p"] == {"order": 42}
    # Later repeats get the first answer.
    same_answer(successes[0], await one())
    assert (await state(api, uid))[1] == after


async def test_fifty_parallel_replays_with_one_key_make_one_clone(
    api: httpx.AsyncClient, engine: Engine
) -> None:
    uid = await failed_chain(api, engine)
    before = (await state(api, uid))[1]
    key = new_key()
    path = f"/sessions/{uid}/instances/t_a%230/replay"
    await asyncio.gather(*(api.get("/healthz") for _ in range(50)))
    answers = await asyncio.gather(
        *(api.post(path, json={}, headers={"Idempotency-Key": key}) for _ in range(50))
    )
    assert {answer.status_code for answer in answers} <= {200, 409}
    successes = [answer.json() for answer in answers if answer.status_code == 200]
    assert successes and all(s == {"replayed": "t_a#0", "instance": "t_a#1"} for s in successes)
    after = (await state(api, uid))[1]
    assert instances_of(after, "t_a") == ["t_a#0", "t_a#1"]
    assert after["version"] == before["version"] + 1


# -- the key itself --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    [b"", b"a" * 256, "cl\u00e9".encode("latin-1"), b"with space", b"tab\tinside"],
    ids=["empty", "too-long", "non-ascii", "space", "tab"],
)
async def test_invalid_keys_are_422_and_change_nothing(
    api: httpx.AsyncClient, engine: Engine, key: bytes
) -> None:
    uid = await failed_chain(api, engine)
    before = await state(api, uid)
    for method, path, body in (
        ("POST", f"/sessions/{uid}/fire", {"trigger": "p"}),
        ("POST", f"/sessions/{uid}/instances/t_a%230/replay", {}),
        ("PATCH", f"/sessions/{uid}/config", {"tasks": {}}),
    ):
        response = await api.request(method, path, json=body, headers={"Idempotency-Key": key})
        assert_problem(response, 422, "validation-error", "header.Idempotency-Key")
    assert await state(api, uid) == before


async def test_the_longest_key_is_accepted(api: httpx.AsyncClient, engine: Engine) -> None:
    uid = await failed_chain(api, engine)
    key = (uuid.uuid4().hex + "~!#$%&'*+-.^_`|" + "k" * 255)[:255]  # visible ASCII
    assert len(key) == 255
    first, second = await repeat(api, "POST", f"/sessions/{uid}/fire", {"trigger": "p"}, key)
    assert first.status_code == 200, first.text
    same_answer(first, second)
    assert instances_of((await state(api, uid))[1], "t_p") == ["t_p#0"]
