"""The OpenAPI document, finished: bearer security, problem documents' real media type, an
example for every schema and, on every error answer, the problem types it can carry.

The committed ``openapi.json`` is ``render(app)``; ``scripts/openapi`` rewrites it and
tests/test_openapi_document.py fails when the app's document differs from it, so clients
generated from the file (clients/typescript) cannot drift from the service.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from service.api.problems import KINDS

PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}
GATED = ("/sessions", "/auth/key")
"""Paths outside /sessions/ that the gate checks too (gate.GATED_PATHS)."""


def _gated(path: str) -> bool:
    return path.startswith("/sessions/") or path in GATED


INSTANCE_EXAMPLE: dict[str, Any] = {
    "name": "t_compareResponses#0",
    "task": "t_compareResponses",
    "status": "finished",
    "kwargs": {"flora_page3": {"responses": {"q1": "yes"}}, "fauna_page6": {}},
    "abandonState": [],
    "metadata": {
        "depth": 0,
        "result": {"same": True},
        "timestamps": {
            "created": "2026-11-27T03:00:00.000Z",
            "finished": "2026-11-27T03:00:01.000Z",
        },
    },
}
SUBSCRIPTION_EXAMPLE: dict[str, Any] = {
    "url": "https://hooks.example.com/triggers",
    "events": ["sessionFinalized"],
}
ATTEMPT_EXAMPLE: dict[str, Any] = {"at": 1795742549000, "status": 200, "durationMs": 42}
DELIVERY_EXAMPLE: dict[str, Any] = {
    "id": "msg_" + "0" * 32,
    "url": "https://hooks.example.com/triggers",
    "type": "sessionFinalized",
    "body": '{"type":"sessionFinalized","session":"applicant:123","timestamp":'
    '"2026-11-27T03:00:00.123456Z","data":{"finalizedAt":"2026-11-27T03:00:00.000Z"}}',
    "created": 1795742549000,
    "state": "delivered",
    "attempts": [ATTEMPT_EXAMPLE],
}
UNRESOLVED_INSTANCE_EXAMPLE: dict[str, Any] = {
    **INSTANCE_EXAMPLE,
    "status": "unstarted",
    "kwargs": {"flora_page3": {"responses": {"q1": "yes"}}},
    "metadata": {},
    "waitingFor": ["fauna_page6"],
    "reason": "waiting for fauna_page6",
}
FIELD_ERROR_EXAMPLE: dict[str, Any] = {"field": "body.trigger", "message": "Field required"}

INDEXED_SESSION_EXAMPLE: dict[str, Any] = {
    "uid": "applicant:123", "updated": "2026-12-01T16:02:29.118Z", "finalized": False,
}  # fmt: skip
EVENT_EXAMPLE: dict[str, Any] = {
    "id": "1795742549118-0", "at": "2026-12-01T16:02:29.118Z", "type": "scheduled",
    "instance": "t_compare#0", "task": "t_compare", "from": "unstarted", "actor": "ops",
}  # fmt: skip

SCHEMA_EXAMPLES: dict[str, list[Any]] = {
    "EventsPage": [{"events": [EVENT_EXAMPLE], "next": "1795742549118-0"}],
    "IndexedSessionView": [INDEXED_SESSION_EXAMPLE],
    "SessionsPage": [{"sessions": [INDEXED_SESSION_EXAMPLE], "next": None}],
    "KeyView": [
        {"name": "ops", "scopes": ["read", "fire"], "prefixes": ["applicant:"], "auth": True}
    ],
    "Attempt": [ATTEMPT_EXAMPLE, {"at": 1795742549000, "error": "ConnectError", "durationMs": 3}],
    "CheckedSubscription": [SUBSCRIPTION_EXAMPLE],
    "Subscription": [SUBSCRIPTION_EXAMPLE],
    "Delivery": [DELIVERY_EXAMPLE],
    "DeliveriesAnswer": [{"deliveries": [DELIVERY_EXAMPLE]}],
    "RedeliverAnswer": [{"id": "msg_" + "0" * 32, "state": "pending"}],
    "FieldError": [FIELD_ERROR_EXAMPLE],
    "FireAnswer": [
        {
            "uid": "applicant:123",
            "trigger": "fauna_page6",
            "scheduled": ["t_compareResponses#0"],
            "abandoned": [],
            "finalized": False,
        }
    ],
    "Health": [{"status": "ok", "checks": {"redis": "ok"}}],
    "Instance": [INSTANCE_EXAMPLE],
    "InstancesAnswer": [{"instances": [INSTANCE_EXAMPLE]}],
    "Problem": [
        {
            "type": "/problems/validation-error",
            "title": KINDS["validation-error"][1],
            "status": 422,
            "detail": "see errors",
            "instance": "/sessions/applicant:123/fire",
            "errors": [FIELD_ERROR_EXAMPLE],
        }
    ],
    "ReplayAnswer": [{"replayed": "t_compareResponses#0", "instance": "t_compareResponses#1"}],
    "SessionAnswer": [
        {
            "uid": "applicant:123",
            "tasks": {
                "t_compareResponses": {
                    "after": ["flora_page3", "fauna_page6"],
                    "run": "https://tasks.example.com/compare",
                    "unless": ["withdrawn"],
                    "withParams": {},
                    "using": "dramatiq",
                    "maxRetries": 3,
                }
            },
            "instances": {"t_compareResponses#0": INSTANCE_EXAMPLE},
            "latestKwargs": {"flora_page3": {"responses": {"q1": "yes"}}, "fauna_page6": {}},
            "finalized": True,
            "finalizedAt": "2026-11-27T03:00:01.000Z",
            "created": "2026-11-27T02:59:00.000Z",
            "updated": "2026-11-27T03:00:01.000Z",
            "version": 7,
        }
    ],
    "UnresolvedInstanceView": [UNRESOLVED_INSTANCE_EXAMPLE],
    "UnresolvedInstancesAnswer": [{"instances": [UNRESOLVED_INSTANCE_EXAMPLE]}],
    "UnresolvedTasksAnswer": [
        {
            "tasks": [
                {
                    "name": "t_compareResponses",
                    "after": ["flora_page3", "fauna_page6"],
                    "run": "https://tasks.example.com/compare",
                    "unless": ["withdrawn"],
                    "waitingFor": ["fauna_page6"],
                    "reason": "waiting for fauna_page6",
                }
            ]
        }
    ],
}
"""Examples for the schemas whose models carry none (answers mostly), keyed by schema name."""

IDEMPOTENCY_KINDS = frozenset({"idempotency-in-flight", "idempotency-key-reused"})


def _security(openapi: dict[str, Any]) -> None:
    """Every /sessions/ operation takes a bearer key (checked by gate.py, not a dependency)."""
    schemes = openapi.setdefault("components", {}).setdefault("securitySchemes", {})
    schemes["bearer"] = {
        "type": "http",
        "scheme": "bearer",
        "description": "An API key listed (hashed) in TRIGGERS_API_KEYS.",
    }
    for path, operations in openapi.get("paths", {}).items():
        if _gated(path):
            for operation in operations.values():
                operation["security"] = [{"bearer": []}]


def _problem_kinds(status: int, mutating: bool) -> list[str]:
    """The problem kinds an answer of this status can carry (idempotency ones only where an
    Idempotency-Key is read)."""
    return [
        kind
        for kind, (kind_status, _) in KINDS.items()
        if kind_status == status and (mutating or kind not in IDEMPOTENCY_KINDS)
    ]


def _problem_examples(openapi: dict[str, Any]) -> None:
    """One example problem document per kind, in components/examples under the kind's name."""
    examples = openapi.setdefault("components", {}).setdefault("examples", {})
    for kind, (status, title) in KINDS.items():
        examples[kind] = {
            "summary": title,
            "value": {"type": f"/problems/{kind}", "title": title, "status": status, "errors": []},
        }


def _problem_content(kinds: list[str]) -> dict[str, Any]:
    """application/problem+json, with a reference to the example of each problem type."""
    examples = {kind: {"$ref": f"#/components/examples/{kind}"} for kind in kinds}
    return {"application/problem+json": {"schema": PROBLEM_REF, "examples": examples}}


def _problem_media_type(openapi: dict[str, Any]) -> None:
    """Error answers are application/problem+json (RFC 9457), never application/json, and each
    names the problem types (``type`` URIs) it can carry, so a client can map them to errors."""
    _problem_examples(openapi)
    for path, operations in openapi.get("paths", {}).items():
        if not _gated(path):
            continue  # /readyz answers its 503 as a Health document
        for method, operation in operations.items():
            mutating = method in ("post", "put", "patch", "delete")
            for status, response in operation.get("responses", {}).items():
                if not (status.isdigit() and int(status) >= 400):
                    continue
                kinds = _problem_kinds(int(status), mutating)
                types = ", ".join(f"/problems/{kind}" for kind in kinds)
                response["description"] = f"Problem document; type: {types}"
                response["content"] = _problem_content(kinds)


def _examples(openapi: dict[str, Any]) -> None:
    """Every schema has an example: the models' own, else SCHEMA_EXAMPLES' (answers mostly)."""
    for name, schema in openapi.get("components", {}).get("schemas", {}).items():
        if "examples" not in schema and name in SCHEMA_EXAMPLES:
            schema["examples"] = SCHEMA_EXAMPLES[name]


IDEMPOTENCY_HEADER = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "Repeat a mutating request safely: the same key and body get the first answer "
    "again without doing the work twice (kept TRIGGERS_IDEMPOTENCY_TTL, default 24 hours); "
    "409 while the first is in flight, 422 with another body.",
    "schema": {"type": "string", "minLength": 1, "maxLength": 255},
}


def _idempotency_header(openapi: dict[str, Any]) -> None:
    """Mutating operations read Idempotency-Key (idempotency.py reads it from the request)."""
    for path, operations in openapi.get("paths", {}).items():
        for method, operation in operations.items():
            if path.startswith("/sessions/") and method in ("post", "put", "patch", "delete"):
                operation.setdefault("parameters", []).append(dict(IDEMPOTENCY_HEADER))


def install(app: FastAPI) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = get_openapi(
                title=app.title, version=app.version, description=app.description,
                routes=app.routes,
            )  # fmt: skip
            _security(document)
            _problem_media_type(document)
            _idempotency_header(document)
            _examples(document)
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def render(app: FastAPI) -> str:
    """The app's document as the text of the committed ``openapi.json`` (scripts/openapi)."""
    return json.dumps(app.openapi(), indent=2, ensure_ascii=False) + "\n"
