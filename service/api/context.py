"""What every request handler shares: the engine, the authenticator, idempotency, settings.

Built once per process by the app's lifespan (one Redis connection pool per process) and
reached by handlers through the ``Ctx`` dependency.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Header, Request

from service.api.auth import Authenticator, Scope
from service.api.idempotency import IdempotencyStore
from service.engine import Engine
from service.managers import Manager
from service.settings import Settings


@dataclass
class ApiContext:
    settings: Settings
    engine: Engine
    manager: Manager
    auth: Authenticator
    idempotency: IdempotencyStore


async def _context(request: Request) -> ApiContext:
    """Async on purpose: FastAPI runs plain-function dependencies in a thread pool, a thread
    hop per request that cost more than the whole engine call (bench/api.py)."""
    context: ApiContext = request.app.state.context
    return context


Ctx = Annotated[ApiContext, Depends(_context)]
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        description="Repeat a mutating request safely: the same key and body get the first "
        "answer again without doing the work twice (kept 24 hours).",
    ),
]


def require(scope: Scope) -> Any:
    """A dependency that authenticates the request and checks ``scope`` and the session UID's
    namespace before the body is even looked at (so a stranger learns nothing from 422s)."""

    async def check(request: Request) -> None:
        context: ApiContext = request.app.state.context
        header = request.headers.get("authorization")
        context.auth.authorize(header, scope, request.path_params.get("uid"))

    return Depends(check)


def document_bearer_auth(openapi: dict[str, Any]) -> dict[str, Any]:
    """Declare the bearer scheme in the OpenAPI document (the dependency reads the header
    itself: a Security sub-dependency per request cost a measurable share of a fire)."""
    components = openapi.setdefault("components", {})
    components.setdefault("securitySchemes", {})["bearer"] = {
        "type": "http",
        "scheme": "bearer",
        "description": "An API key listed (hashed) in TRIGGERS_API_KEYS.",
    }
    for path, operations in openapi.get("paths", {}).items():
        if path.startswith("/sessions/"):
            for operation in operations.values():
                operation["security"] = [{"bearer": []}]
    return openapi
