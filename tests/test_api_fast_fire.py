"""The front layer's fast fire (service/api/fast_fire.py) answers exactly as the fire route does.

A fire sent as ``application/json`` without an Idempotency-Key is answered by the front layer;
the same fire sent as ``application/json; charset=utf-8`` goes through FastAPI's route (the
fast path takes only the exact type). Each test sends both and compares what comes back: the
status, the headers a client reads, the bytes of the body; refusals the fast path hands on to
the route (bodies it does not read itself, a body over the limit) and refusals raised by the
fire (an engine limit) alike.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from service.api.fast_fire import FastFire, fire_uid
from tests.conftest import LiveServer, api_settings

FAST = {"content-type": "application/json"}
ROUTE = {"content-type": "application/json; charset=utf-8"}
CONFIG = {"tasks": {"t_a": {"after": ["go"], "run": "echo"},
                    "t_every": {"after": ["go"], "andEvery": "page", "run": "echo"},
                    "t_open": {"after": ["never"], "andEvery": "open", "run": "echo"}}}  # fmt: skip


@pytest.fixture(scope="module")
def small_url(redis_url: str) -> Iterator[str]:
    """A server with one unstarted instance per session at most and 1,024-byte bodies."""
    settings = api_settings(redis_url, max_open_instances=1, max_body_bytes=1024)
    with LiveServer(settings) as server:
        yield server.url


@pytest.fixture
async def small(small_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=small_url, timeout=10) as client:
        yield client


def new_uid() -> str:
    return f"fast-{uuid.uuid4().hex[:12]}"


async def configured(api: httpx.AsyncClient) -> str:
    uid = new_uid()
    assert (await api.put(f"/sessions/{uid}/config", json=CONFIG)).status_code == 200
    return uid


def seen(response: httpx.Response, uid: str) -> tuple[int, dict[str, str], bytes]:
    """What a client reads, the session's UID written as <uid> (two sessions are compared)."""
    headers = {k: v for k, v in response.headers.items() if k not in ("date", "x-request-id")}
    return response.status_code, headers, response.content.replace(uid.encode(), b"<uid>")


async def both(
    api: httpx.AsyncClient, content: bytes | None, *, same_session: bool = False
) -> tuple[tuple[int, dict[str, str], bytes], tuple[int, dict[str, str], bytes]]:
    """The fast path's answer and the route's to the same fire (into twin sessions, or into the
    same one when the fire changes nothing)."""
    fast_uid = await configured(api)
    route_uid = fast_uid if same_session else await configured(api)
    fast = await api.post(f"/sessions/{fast_uid}/fire", content=content, headers=FAST)
    route = await api.post(f"/sessions/{route_uid}/fire", content=content, headers=ROUTE)
    return seen(fast, fast_uid), seen(route, route_uid)


@pytest.mark.parametrize(
    "content",
    [
        b'{"trigger": "go"}',
        b'{"trigger": "go", "kwargs": {"a": [1, 2.5, null, true], "t": "caf\\u00e9"}}',
        b'{"trigger": "go", "kwargs": null}',
        b'{"trigger": "nobody-listens"}',
    ],
)
async def test_a_fire_answers_as_the_route_does(api: httpx.AsyncClient, content: bytes) -> None:
    fast, route = await both(api, content)
    assert fast[0] == 200
    assert fast == route


@pytest.mark.parametrize(
    "content",
    [
        b'{"trigger": "a#b"}',  # a name the pattern refuses
        b'{"trigger": "go", "extra": 1}',  # a field FireBody forbids
        b'{"trigger": "go", "kwargs": [1]}',  # kwargs not an object
        b'["go"]',  # not an object
        b'{"trigger": "go",',  # not JSON
        b'{"trigger": "go", "kwargs": {"x": NaN}}',  # what only the json module reads
        b'{"trigger": "go", "kwargs": {"n": 123456789012345678901234567890}}',
        b"",
    ],
)
async def test_a_refused_body_is_answered_as_the_route_answers_it(
    api: httpx.AsyncClient, content: bytes
) -> None:
    fast, route = await both(api, content, same_session=True)
    assert fast[0] in (400, 422)
    assert fast == route


async def test_an_engine_refusal_is_answered_by_the_apps_handler(
    small: httpx.AsyncClient,
) -> None:
    """The second ``open`` fire would hold two unstarted instances, over the limit of one."""
    uid = await configured(small)
    first = await small.post(f"/sessions/{uid}/fire", json={"trigger": "open"})
    assert first.status_code == 200, first.text
    fast = await small.post(f"/sessions/{uid}/fire", content=b'{"trigger":"open"}', headers=FAST)
    route = await small.post(f"/sessions/{uid}/fire", content=b'{"trigger":"open"}', headers=ROUTE)
    assert fast.status_code == 422
    assert fast.json()["type"] == "/problems/limit-exceeded"
    assert seen(fast, uid) == seen(route, uid)


async def test_a_chunked_body_is_read_whole(api: httpx.AsyncClient) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for part in (b'{"trig', b'ger": "go", "kw', b'args": {"a": 1}}'):
            yield part

    uid = await configured(api)
    fired = await api.post(f"/sessions/{uid}/fire", content=chunks(), headers=FAST)
    assert fired.status_code == 200, fired.text
    assert fired.json()["scheduled"] == ["t_a#0"]
    assert (await api.get(f"/sessions/{uid}")).json()["latestKwargs"]["go"] == {"a": 1}


async def test_a_chunked_body_over_the_limit_gets_the_routes_413(
    small: httpx.AsyncClient,
) -> None:
    """Refused while the fast path reads it; the route gets the refusal and answers it."""

    def chunks() -> AsyncIterator[bytes]:
        async def parts() -> AsyncIterator[bytes]:
            yield b'{"trigger": "go", "kwargs": {"pad": "'
            for _ in range(30):
                yield b"x" * 50
            yield b'"}}'

        return parts()

    uid = await configured(small)
    fast = await small.post(f"/sessions/{uid}/fire", content=chunks(), headers=FAST)
    route = await small.post(f"/sessions/{uid}/fire", content=chunks(), headers=ROUTE)
    assert fast.status_code == 413
    assert seen(fast, uid) == seen(route, uid)


async def test_the_request_id_and_the_metrics_route(api: httpx.AsyncClient) -> None:
    uid = await configured(api)
    fired = await api.post(f"/sessions/{uid}/fire", content=b'{"trigger":"go"}',
                           headers={**FAST, "x-request-id": "fast-rid-1"})  # fmt: skip
    assert fired.status_code == 200
    assert fired.headers["x-request-id"] == "fast-rid-1"
    metrics = (await api.get("/metrics")).text
    assert 'route="/sessions/{uid}/fire",status="200"' in metrics


@pytest.mark.parametrize(
    ("method", "path", "taken"),
    [
        ("POST", "/sessions/s1/fire", True),
        ("POST", "/sessions/a.b:c@d+e-f_g/fire", True),
        ("PUT", "/sessions/s1/fire", False),
        ("POST", "/sessions/s1/fire/", False),
        ("POST", "/sessions/../fire", False),  # the UID pattern refuses it: the route's 422
        ("POST", "/sessions/s\ue0001/fire", False),  # an encoded slash (the gate's stand-in)
        ("POST", "/sessions/s1\n/fire", False),
        ("POST", "/sessions/" + "x" * 201 + "/fire", False),
    ],
)
def test_which_fires_the_fast_path_takes(method: str, path: str, taken: bool) -> None:
    scope = {"type": "http", "method": method, "path": path, "root_path": ""}
    assert (fire_uid(scope) is not None) is taken
    assert fire_uid({**scope, "root_path": "/api"}) is None  # behind a prefix: the route


def test_which_bodies_the_fast_path_reads() -> None:
    parse = FastFire._parse
    assert parse(b'{"trigger":"go","kwargs":{"a":1}}') is not None
    refused = [b'{"trigger":"go","kwargs":{"a":1e400}}', b'{"trigger":"go","x":1}', b"[]", b"{",
               b'{"trigger":"a#b"}', b'{"trigger":"go","kwargs":{"n":Infinity}}']  # fmt: skip
    for body in refused:
        assert parse(body) is None, body
