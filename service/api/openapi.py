"""The OpenAPI document, finished: bearer security and problem documents' real media type."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}
GATED = ("/sessions", "/auth/key")
"""Paths outside /sessions/ that the gate checks too (gate.GATED_PATHS)."""


def _gated(path: str) -> bool:
    return path.startswith("/sessions/") or path in GATED


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


def _problem_media_type(openapi: dict[str, Any]) -> None:
    """Error answers are application/problem+json (RFC 9457), never application/json."""
    for path, operations in openapi.get("paths", {}).items():
        if not _gated(path):
            continue  # /readyz answers its 503 as a Health document
        for operation in operations.values():
            for status, response in operation.get("responses", {}).items():
                if status.isdigit() and int(status) >= 400:
                    response["content"] = {"application/problem+json": {"schema": PROBLEM_REF}}


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
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
