"""Bearer API keys (TRIGGERS_API_KEYS): 401 without a valid key, 403 outside the key's UID
prefixes or scopes, on every endpoint, through real HTTP; a refused request changes nothing.

Keys are made with service.api.auth.new_api_key and given to the server as the JSON list the
setting holds. Scopes: read (every GET), fire, configure (config, DELETE), operate (replay, skip,
status, metadata, logs-resolved).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from service.api.auth import SCOPES, Scope, new_api_key
from service.engine import Engine
from tests.conftest import LiveServer, api_settings, engine_on

PROBLEM = "application/problem+json"


@dataclass(frozen=True)
class Endpoint:
    method: str
    suffix: str  # after /sessions/{uid}
    body: Any
    scope: Scope
    ok: int = 200

    @property
    def id(self) -> str:
        return f"{self.method} {self.suffix or '/'}"


ENDPOINTS = [
    Endpoint("PATCH", "/config", {"tasks": {"t_c": {"after": ["c"], "run": "x"}}}, "configure"),
    Endpoint("PUT", "/config", {"tasks": {"t_a": {"after": ["go"], "run": "X"}}}, "configure"),
    Endpoint("GET", "/config", None, "read"),
    Endpoint("POST", "/fire", {"trigger": "go", "kwargs": {"k": 1}}, "fire"),
    Endpoint("GET", "", None, "read"),
    Endpoint("GET", "/tasks/unresolved", None, "read"),
    Endpoint("GET", "/instances", None, "read"),
    Endpoint("GET", "/instances/unresolved", None, "read"),
    Endpoint("GET", "/instances/t_a%230", None, "read"),
    Endpoint("POST", "/instances/t_a%230/replay", {}, "operate"),
    Endpoint("POST", "/instances/t_a%230/skip", {"cascade": True}, "operate"),
    Endpoint("POST", "/instances/t_a%230/status", {"status": "finished"}, "operate"),
    Endpoint("PATCH", "/instances/t_a%230/metadata", {"k": 1}, "operate"),
    Endpoint("POST", "/instances/t_a%230/logs-resolved", None, "operate"),
    Endpoint("DELETE", "", None, "configure", ok=204),
]
ENDPOINT_IDS = [endpoint.id for endpoint in ENDPOINTS]


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


@dataclass
class Keys:
    """Secrets by key name."""

    secrets: dict[str, str]

    def header(self, name: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.secrets[name]}"}


def key_table() -> tuple[Keys, str]:
    """The keys of the test server and the TRIGGERS_API_KEYS value that declares them."""
    specs: dict[str, tuple[list[str], list[Scope]]] = {
        "admin": ([], list(SCOPES)),  # no prefixes: every session
        "tenant": (["app:"], list(SCOPES)),
        "two-namespaces": (["app:", "cfg-"], ["read"]),
    }
    for scope in SCOPES:
        specs[f"no-{scope}"] = (["app:"], [s for s in SCOPES if s != scope])
        specs[f"only-{scope}"] = (["app:"], [scope])
    secrets, entries = {}, []
    for name, (prefixes, scopes) in specs.items():
        secret, entry = new_api_key(name, prefixes, scopes)
        secrets[name] = secret
        entries.append(entry.model_dump())
    return Keys(secrets), json.dumps(entries)


KEYS, API_KEYS = key_table()


@pytest.fixture(scope="module")
def server(redis_url: str) -> Iterator[tuple[str, str]]:
    settings = api_settings(redis_url, auth="on", api_keys=API_KEYS)
    with LiveServer(settings) as live:
        yield live.url, settings.key_prefix


@pytest.fixture(scope="module")
async def engine(server: tuple[str, str], redis_url: str) -> AsyncIterator[Engine]:
    async with engine_on(redis_url, server[1]) as engine:
        yield engine


@pytest.fixture
async def client(server: tuple[str, str]) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server[0], timeout=10) as client:
        yield client


async def state(client: httpx.AsyncClient, uid: str) -> tuple[int, Any]:
    """The session as the admin key reads it."""
    response = await client.get(f"/sessions/{uid}", headers=KEYS.header("admin"))
    assert response.status_code in (200, 404), response.text
    return response.status_code, response.json()


async def prepared(client: httpx.AsyncClient, engine: Engine, namespace: str = "app:") -> str:
    """A session in ``namespace`` (set up with the admin key) where t_a#0 has failed."""
    uid = f"{namespace}{uuid.uuid4().hex[:12]}"
    admin = KEYS.header("admin")
    config = {
        "tasks": {"t_a": {"after": ["go"], "run": "X"}, "t_b": {"after": ["t_a"], "run": "P"}}
    }
    response = await client.patch(f"/sessions/{uid}/config", json=config, headers=admin)
    assert response.status_code == 200, response.text
    response = await client.post(f"/sessions/{uid}/fire", json={"trigger": "go"}, headers=admin)
    assert response.status_code == 200, response.text
    claim = await engine.claim(uid, "t_a#0")
    assert claim.token is not None
    await engine.fail(uid, "t_a#0", claim.token, "builtins.RuntimeError", "boom")
    return uid


async def call(
    client: httpx.AsyncClient, endpoint: Endpoint, uid: str, headers: dict[str, str]
) -> httpx.Response:
    return await client.request(
        endpoint.method, f"/sessions/{uid}{endpoint.suffix}", json=endpoint.body, headers=headers
    )


WRONG_AUTHORIZATIONS = {
    "unknown-key": "Bearer trg_" + "A" * 43,
    "key-with-extra-character": "Bearer {admin}x",
    "truncated-key": "Bearer {admin_truncated}",
    "sha256-instead-of-secret": "Bearer {admin_sha}",
    "basic-scheme": "Basic {admin}",
    "no-scheme": "{admin}",
    "bare-bearer": "Bearer",
    "empty": "",
}


def wrong_header(template: str) -> dict[str, str]:
    import hashlib

    admin = KEYS.secrets["admin"]
    value = template.format(
        admin=admin,
        admin_truncated=admin[:-1],
        admin_sha=hashlib.sha256(admin.encode()).hexdigest(),
    )
    return {"Authorization": value}


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=ENDPOINT_IDS)
async def test_no_key_is_401_and_changes_nothing(
    client: httpx.AsyncClient, engine: Engine, endpoint: Endpoint
) -> None:
    uid = await prepared(client, engine)
    before = await state(client, uid)
    response = await call(client, endpoint, uid, {})
    assert_problem(response, 401, "unauthorized", "header.Authorization")
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert await state(client, uid) == before


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=ENDPOINT_IDS)
async def test_wrong_key_is_401_and_changes_nothing(
    client: httpx.AsyncClient, engine: Engine, endpoint: Endpoint
) -> None:
    uid = await prepared(client, engine)
    before = await state(client, uid)
    for name, template in WRONG_AUTHORIZATIONS.items():
        response = await call(client, endpoint, uid, wrong_header(template))
        assert response.status_code == 401, (name, response.text)
        assert_problem(response, 401, "unauthorized", "header.Authorization")
        assert "www-authenticate" in response.headers
    assert await state(client, uid) == before


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=ENDPOINT_IDS)
async def test_other_namespace_is_403_and_changes_nothing(
    client: httpx.AsyncClient, engine: Engine, endpoint: Endpoint
) -> None:
    """A key with every scope, limited to app:, on a session outside it."""
    uid = await prepared(client, engine, namespace="other:")
    before = await state(client, uid)
    response = await call(client, endpoint, uid, KEYS.header("tenant"))
    assert_problem(response, 403, "forbidden", "path.uid")
    assert await state(client, uid) == before


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=ENDPOINT_IDS)
async def test_missing_scope_is_403_and_changes_nothing(
    client: httpx.AsyncClient, engine: Engine, endpoint: Endpoint
) -> None:
    uid = await prepared(client, engine)
    before = await state(client, uid)
    response = await call(client, endpoint, uid, KEYS.header(f"no-{endpoint.scope}"))
    body = assert_problem(response, 403, "forbidden")
    assert endpoint.scope in body["detail"]
    assert await state(client, uid) == before
    # Only that scope is missing: every other key of the namespace is refused the same way.
    for scope in SCOPES:
        if scope != endpoint.scope:
            response = await call(client, endpoint, uid, KEYS.header(f"only-{scope}"))
            assert_problem(response, 403, "forbidden")
    assert await state(client, uid) == before


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=ENDPOINT_IDS)
async def test_a_key_with_the_scope_in_its_namespace_is_served(
    client: httpx.AsyncClient, engine: Engine, endpoint: Endpoint
) -> None:
    for key in (f"only-{endpoint.scope}", "tenant", "admin"):
        uid = await prepared(client, engine)
        response = await call(client, endpoint, uid, KEYS.header(key))
        assert response.status_code == endpoint.ok, (key, response.text)


async def test_the_bearer_scheme_is_case_insensitive(
    client: httpx.AsyncClient, engine: Engine
) -> None:
    uid = await prepared(client, engine)
    response = await client.get(
        f"/sessions/{uid}", headers={"Authorization": f"bearer {KEYS.secrets['only-read']}"}
    )
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    ("uid", "allowed"),
    [
        ("app:1", True),
        ("app:", True),
        ("cfg-7", True),
        ("apple:1", False),
        ("app", False),
        ("xapp:1", False),
        ("APP:1", False),
        ("cfg7", False),
    ],
)
async def test_prefixes_match_the_start_of_the_uid(
    client: httpx.AsyncClient, uid: str, allowed: bool
) -> None:
    headers = KEYS.header("two-namespaces")  # prefixes app: and cfg-, read only
    response = await client.get(f"/sessions/{uid}-{uuid.uuid4().hex[:8]}", headers=headers)
    if allowed:
        assert_problem(response, 404, "not-found")  # let in; the session does not exist
    else:
        assert_problem(response, 403, "forbidden", "path.uid")


async def test_no_key_is_401_before_anything_is_looked_at(client: httpx.AsyncClient) -> None:
    """A stranger learns nothing: not whether a session exists, nor what is wrong with the
    request."""
    unknown = f"app:{uuid.uuid4().hex[:12]}"
    for method, path, body in (
        ("GET", f"/sessions/{unknown}", None),  # unknown session: not 404
        ("GET", "/sessions/a%20b", None),  # invalid UID: not 422
        ("POST", f"/sessions/{unknown}/fire", {"trigger": 5}),  # invalid body: not 422
        ("PATCH", f"/sessions/{unknown}/config", {"tasks": []}),
        ("GET", f"/sessions/{unknown}/instances/bad-name", None),
        ("POST", f"/sessions/{unknown}/instances/t%230/replay", {"kwargs": 1}),
    ):
        response = await client.request(method, path, json=body)
        assert_problem(response, 401, "unauthorized")
    assert (await state(client, unknown))[0] == 404


async def test_no_key_with_malformed_json_is_401(client: httpx.AsyncClient) -> None:
    """Even a body that is not JSON gets 401 without a key: auth comes before the body."""
    unknown = f"app:{uuid.uuid4().hex[:12]}"
    response = await client.post(
        f"/sessions/{unknown}/fire",
        content=b'{"trigger": ',
        headers={"content-type": "application/json"},
    )
    assert_problem(response, 401, "unauthorized")
    assert (await state(client, unknown))[0] == 404


async def test_forbidden_is_403_before_anything_is_looked_at(client: httpx.AsyncClient) -> None:
    other = f"other:{uuid.uuid4().hex[:12]}"
    tenant = KEYS.header("tenant")
    for method, path, body in (
        ("GET", f"/sessions/{other}", None),
        ("POST", f"/sessions/{other}/fire", {"trigger": 5}),
        ("POST", f"/sessions/{other}/fire", {"trigger": "go"}),
    ):
        response = await client.request(method, path, json=body, headers=tenant)
        assert_problem(response, 403, "forbidden", "path.uid")
    assert (await state(client, other))[0] == 404
    # A missing scope, with an invalid body: 403 too.
    response = await client.post(
        f"/sessions/app:{uuid.uuid4().hex[:8]}/fire",
        json={"trigger": 5},
        headers=KEYS.header("no-fire"),
    )
    assert_problem(response, 403, "forbidden")


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/openapi.json"])
async def test_operational_endpoints_need_no_key(client: httpx.AsyncClient, path: str) -> None:
    response = await client.get(path)
    assert response.status_code == 200, response.text


async def test_the_document_declares_bearer_auth(client: httpx.AsyncClient) -> None:
    document = (await client.get("/openapi.json")).json()
    schemes = document["components"]["securitySchemes"]
    assert any(s.get("type") == "http" and s.get("scheme") == "bearer" for s in schemes.values())


async def test_auth_on_without_keys_refuses_every_request(redis_url: str) -> None:
    with LiveServer(api_settings(redis_url, auth="on", api_keys=None)) as live:
        async with httpx.AsyncClient(base_url=live.url, timeout=10) as client:
            uid = f"app:{uuid.uuid4().hex[:12]}"
            for endpoint in ENDPOINTS:
                for headers in ({}, KEYS.header("admin")):
                    response = await call(client, endpoint, uid, headers)
                    assert_problem(response, 401, "unauthorized")
            assert (await client.get("/healthz")).status_code == 200


async def test_auth_is_on_by_default(redis_url: str) -> None:
    """TRIGGERS_AUTH defaults to on: a server started without saying otherwise wants a key."""
    settings = api_settings(redis_url, api_keys=API_KEYS)
    settings = settings.model_copy(update={"auth": type(settings).model_fields["auth"].default})
    assert settings.auth == "on"
    with LiveServer(settings) as live:
        async with httpx.AsyncClient(base_url=live.url, timeout=10) as client:
            uid = f"app:{uuid.uuid4().hex[:12]}"
            response = await client.post(f"/sessions/{uid}/fire", json={"trigger": "go"})
            assert_problem(response, 401, "unauthorized")
            response = await client.post(
                f"/sessions/{uid}/fire", json={"trigger": "go"}, headers=KEYS.header("only-fire")
            )
            assert response.status_code == 200, response.text
