"""The lean fire path keeps its promises: the fire answer is the documented FireAnswer (built
without FastAPI re-validating it), bodies parsed with orjson read exactly as the json module
read them, and the log context bound per request never leaks into another request.

The front layer's own behaviours (X-Request-ID, request metrics, the gate, 413, 408) are
covered where they were before it merged them: test_api_auth.py, test_api_sessions.py,
test_slow_clients.py, e2e/test_logs.py and e2e/test_operations.py.
"""

from __future__ import annotations

import asyncio
import json
import uuid

import httpx
import pytest

from service.api.json_body import StrictJsonRequest
from service.api.schemas import FireAnswer
from service.logs import (
    bind_contextvars,
    bound_contextvars,
    get_contextvars,
    request_context,
    reset_context,
)


def new_uid() -> str:
    return f"front-{uuid.uuid4().hex[:12]}"


async def test_the_fire_answer_is_the_documented_model(api: httpx.AsyncClient) -> None:
    uid = new_uid()
    config = {"tasks": {"t_a": {"after": ["go"], "run": "echo"},
                        "t_b": {"after": ["go"], "unless": ["stop"], "run": "echo"}}}  # fmt: skip
    assert (await api.put(f"/sessions/{uid}/config", json=config)).status_code == 200
    fired = await api.post(f"/sessions/{uid}/fire", json={"trigger": "go"})
    assert fired.status_code == 200, fired.text
    assert fired.headers["content-type"] == "application/json"
    answer = fired.json()
    assert list(answer) == list(FireAnswer.model_fields)  # every field, in the model's order
    assert FireAnswer.model_validate(answer).model_dump(mode="json") == answer
    assert sorted(answer["scheduled"]) == ["t_a#0", "t_b#0"] and answer["finalized"] is False
    assert fired.content == FireAnswer.model_validate(answer).model_dump_json().encode()


async def fire_raw(api: httpx.AsyncClient, kwargs: str) -> tuple[str, httpx.Response]:
    uid = new_uid()
    config = {"tasks": {"t_a": {"after": ["go"], "run": "echo"}}}
    assert (await api.put(f"/sessions/{uid}/config", json=config)).status_code == 200
    content = '{"trigger": "go", "kwargs": ' + kwargs + "}"
    headers = {"content-type": "application/json"}
    return uid, await api.post(f"/sessions/{uid}/fire", content=content, headers=headers)


@pytest.mark.parametrize(
    "kwargs",
    [
        '{"max": 9223372036854775807, "min": -9223372036854775808, "f": 0.1234567890123456789}',
        '{"text": "caf\\u00e9 \\ud83d\\ude00", "nested": [{"a": [1, 2.5, -0.0, null, true]}]}',
    ],
)
async def test_bodies_read_as_the_json_module_reads_them(
    api: httpx.AsyncClient, kwargs: str
) -> None:
    uid, fired = await fire_raw(api, kwargs)
    assert fired.status_code == 200, fired.text
    session = (await api.get(f"/sessions/{uid}")).json()
    assert session["latestKwargs"]["go"] == json.loads(kwargs)


@pytest.mark.parametrize("number", ["123456789012345678901234567890", "-9223372036854775809"])
async def test_integers_beyond_64_bits_are_refused_not_rounded(
    api: httpx.AsyncClient, number: str
) -> None:
    """orjson would read them as floats (a value silently changed): such bodies go to the
    json module, whose exact integer the kwargs check refuses, as before orjson."""
    _, fired = await fire_raw(api, '{"n": ' + number + "}")
    assert fired.status_code == 422, fired.text
    assert fired.json()["errors"][0]["field"] == "body.kwargs"


@pytest.mark.parametrize(
    "body",
    [b'{"a": 1}', b'{"a": 1,}', b"[1, 2", b'"\\ud800"', b'{"n": 1e5, "m": -12}', b"\xef\xbb\xbf{}"],
)
async def test_strict_json_agrees_with_the_json_module(body: bytes) -> None:
    """Same value, or the json module's own error (the 400/422 answers quote it)."""

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": body, "more_body": False}

    request = StrictJsonRequest({"type": "http", "headers": []}, receive)
    try:
        expected: object = json.loads(body)
    except json.JSONDecodeError as error:
        with pytest.raises(json.JSONDecodeError) as raised:
            await request.json()
        assert (raised.value.msg, raised.value.pos) == (error.msg, error.pos)
        return
    assert await request.json() == expected


async def test_request_context_is_per_request_and_reset() -> None:
    """Each request binds exactly its fields (an earlier request's are dropped), fields bound
    during it stay in it, and concurrent requests never see each other's."""
    bind_contextvars(stale="left by an earlier request")
    seen: dict[str, dict[str, object]] = {}

    async def request(rid: str) -> None:
        token = request_context({"request_id": rid})
        try:
            await asyncio.sleep(0)
            bind_contextvars(trigger=f"t-{rid}")
            with bound_contextvars(task="x"):
                await asyncio.sleep(0)
                seen[rid] = get_contextvars()
        finally:
            reset_context(token)

    await asyncio.gather(request("a"), request("b"))
    assert seen == {
        "a": {"request_id": "a", "trigger": "t-a", "task": "x"},
        "b": {"request_id": "b", "trigger": "t-b", "task": "x"},
    }
    assert get_contextvars() == {"stale": "left by an earlier request"}


async def test_a_status_answer_is_the_instance_as_the_response_model_gives_it(
    api: httpx.AsyncClient,
) -> None:
    """POST .../status answers with the engine's record serialized once; GET of the instance
    (still serialized by FastAPI through response_model=Instance) gives the same bytes."""
    uid = new_uid()
    config = {"tasks": {"t_x": {"after": ["go"], "run": "worker-side", "using": "external"}}}
    assert (await api.put(f"/sessions/{uid}/config", json=config)).status_code == 200
    fired = await api.post(f"/sessions/{uid}/fire", json={"trigger": "go", "kwargs": {"n": 1}})
    assert fired.json()["scheduled"] == ["t_x#0"], fired.text
    path = f"/sessions/{uid}/instances/t_x%230"
    status = {"status": "finished", "metadata": {"by": "front", "score": 0.5}}
    answer = await api.post(path + "/status", json=status)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "application/json"
    read = await api.get(path)
    assert answer.json()["status"] == "finished" and answer.content == read.content
