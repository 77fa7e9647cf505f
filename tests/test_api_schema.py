"""Schemathesis against the OpenAPI document of the live API (real uvicorn, real Redis).

Every operation of the document is exercised with generated requests, valid ones and invalid
ones (schemathesis' positive and negative modes, its explicit examples and coverage cases).
Every answer must be no 5xx, have a documented status code and content type, and match the
document's schema; problem documents (4xx) must in addition be RFC 9457 problems of this
service (``type`` "/problems/<kind>", ``status`` equal to the answer's, ``errors`` a list of
{field, message}).

The schema is the app's own (``create_app(...).openapi()``, no Redis needed to build it), so that
pytest gets one test per operation; test_served_document_is_the_app_document checks that
GET /openapi.json serves exactly that document. Bounded: a few dozen examples per operation,
no shrinking, well under two minutes in all.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from redis.asyncio import Redis
from schemathesis import Case
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from service.api.app import create_app
from service.api.problems import KINDS, Problem
from service.engine import Engine
from service.settings import Settings
from tests.conftest import LiveServer, api_settings

DOCUMENT: dict[str, Any] = create_app(Settings(auth="off", redis_url=None)).openapi()
schema = schemathesis.openapi.from_dict(DOCUMENT)
schema.config.generation.update(max_examples=25, no_shrink=True)

# The documented examples of the path parameters: a session and an instance that exist (and a
# failed instance), so that generated requests also reach the success paths, not only 404s.
EXAMPLE_UID = "applicant:123"
EXAMPLE_INSTANCE = "t_compareResponses#0"
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.fixture(scope="module")
def schema_server(redis_url: str) -> Iterator[tuple[str, str]]:
    """A server of its own (generated requests may DELETE any session): (url, key prefix)."""
    settings_ = api_settings(redis_url)
    with LiveServer(settings_) as server:
        yield server.url, settings_.key_prefix


@pytest.fixture(scope="module")
async def schema_url(schema_server: tuple[str, str], redis_url: str) -> AsyncIterator[str]:
    """The server's URL, with the documented example session in place: configured, fired, and
    its instance failed (through the engine, as a worker would)."""
    url, prefix = schema_server
    engine = Engine(Redis.from_url(redis_url, decode_responses=True), prefix=prefix)
    await engine.load_scripts()
    try:
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            config = {
                "tasks": {
                    "t_compareResponses": {
                        "after": ["flora_page3", "fauna_page6"],
                        "unless": ["withdrawn"],
                        "run": "app.compare_responses",
                    },
                    "t_page": {"after": ["t_compareResponses"], "run": "app.page"},
                }
            }
            answer = await client.put(f"/sessions/{EXAMPLE_UID}/config", json=config)
            assert answer.status_code == 200, answer.text
            for trigger in ("flora_page3", "fauna_page6"):
                answer = await client.post(
                    f"/sessions/{EXAMPLE_UID}/fire", json={"trigger": trigger, "kwargs": {}}
                )
                assert answer.status_code == 200, answer.text
        claim = await engine.claim(EXAMPLE_UID, EXAMPLE_INSTANCE)
        assert claim.state == "claimed" and claim.token is not None
        await engine.fail(EXAMPLE_UID, EXAMPLE_INSTANCE, claim.token, "builtins.ValueError", "x")
    finally:
        await engine.aclose()
    yield url


def check_problem(response: Any) -> None:
    """A 4xx answer is a problem document of this service."""
    if not 400 <= response.status_code < 500:
        return
    header = response.headers.get("content-type") or [""]
    media_type = header[0].split(";")[0].strip()
    assert media_type == "application/problem+json", (response.status_code, media_type)
    body = response.json()
    problem = Problem.model_validate(body)
    kind = problem.type.removeprefix("/problems/")
    assert problem.type.startswith("/problems/") and kind in KINDS, problem.type
    assert problem.status == response.status_code == KINDS[kind][0], body


@schema.parametrize()
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
    database=None,
)
def test_every_answer_matches_the_document(case: Case, schema_url: str) -> None:
    response = case.call(base_url=schema_url, timeout=10)
    case.validate_response(response, checks=CHECKS)
    check_problem(response)


def test_served_document_is_the_app_document(schema_url: str) -> None:
    served = httpx.get(schema_url + "/openapi.json", timeout=10)
    assert served.status_code == 200
    assert served.json() == DOCUMENT


def test_document_covers_every_endpoint_of_the_contract() -> None:
    """API.md's endpoints are all in the document, with the methods it names."""
    expected = {
        "/sessions/{uid}/config": {"patch", "put", "get"},
        "/sessions/{uid}/fire": {"post"},
        "/sessions/{uid}": {"get", "delete"},
        "/sessions/{uid}/tasks/unresolved": {"get"},
        "/sessions/{uid}/instances": {"get"},
        "/sessions/{uid}/instances/unresolved": {"get"},
        "/sessions/{uid}/instances/{name}": {"get"},
        "/sessions/{uid}/instances/{name}/replay": {"post"},
        "/sessions/{uid}/instances/{name}/skip": {"post"},
        "/sessions/{uid}/instances/{name}/status": {"post"},
        "/sessions/{uid}/instances/{name}/metadata": {"patch"},
        "/sessions/{uid}/instances/{name}/logs-resolved": {"post"},
    }
    paths = DOCUMENT["paths"]
    for path, methods in expected.items():
        assert path in paths, path
        assert methods <= set(paths[path]), (path, set(paths[path]))


def test_problem_answers_are_documented_as_problem_json() -> None:
    """Error answers are sent as application/problem+json: the document must give that media
    type the Problem schema, or no client or validator ever checks a problem document against
    it (schemathesis cannot either: a media type without a schema validates anything)."""
    problem_ref = "#/components/schemas/Problem"
    wrong = []
    for path, operations in DOCUMENT["paths"].items():
        for method, operation in operations.items():
            for status, response in operation.get("responses", {}).items():
                if not str(status).startswith("4"):
                    continue
                content = response.get("content", {})
                declared = content.get("application/problem+json", {}).get("schema", {})
                if declared.get("$ref") != problem_ref:
                    wrong.append(f"{method.upper()} {path} {status}: {content}")
    assert not wrong, f"{len(wrong)} problem answers without the Problem schema, e.g. {wrong[0]}"


def test_every_status_the_service_answers_is_documented() -> None:
    """Every changing operation accepts Idempotency-Key, so it can answer 409 (a request with
    the key still in flight) and 422 (key reused); one that reads a JSON body can also answer
    400 (malformed JSON) and 413 (over the size limit). All must be in the document."""
    missing = []
    for path, operations in DOCUMENT["paths"].items():
        for method, operation in operations.items():
            if method == "get":
                continue
            required = {"409", "422"}
            if "requestBody" in operation:
                required |= {"400", "413"}
            for status in sorted(required - set(operation["responses"])):
                missing.append(f"{method.upper()} {path} {status}")
    assert not missing, missing
