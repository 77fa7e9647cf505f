"""The OpenAPI document, finished: bearer security and problem documents' real media type."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}


def _security(openapi: dict[str, Any]) -> None:
    """Every /sessions/ operation takes a bearer key (checked by gate.py, not a dependency)."""
    schemes = openapi.setdefault("components", {}).setdefault("securitySchemes", {})
    schemes["bearer"] = {
        "type": "http",
        "scheme": "bearer",
        "description": "An API key listed (hashed) in TRIGGERS_API_KEYS.",
    }
    for path, operations in openapi.get("paths", {}).items():
        if path.startswith("/sessions/"):
            for operation in operations.values():
                operation["security"] = [{"bearer": []}]


def _problem_media_type(openapi: dict[str, Any]) -> None:
    """Error answers are application/problem+json (RFC 9457), never application/json."""
    for operations in openapi.get("paths", {}).values():
        for operation in operations.values():
            for status, response in operation.get("responses", {}).items():
                if status.isdigit() and int(status) >= 400:
                    response["content"] = {"application/problem+json": {"schema": PROBLEM_REF}}


def install(app: FastAPI) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = get_openapi(
                title=app.title, version=app.version, description=app.description,
                routes=app.routes,
            )  # fmt: skip
            _security(document)
            _problem_media_type(document)
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
