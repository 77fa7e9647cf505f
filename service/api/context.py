"""What every request handler shares: the engine, the authenticator, idempotency, settings.

Built once per process by the app's lifespan (one Redis connection pool per process) and
reached by handlers through the ``Ctx`` dependency.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Header, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

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


def _context(request: Request) -> ApiContext:
    context: ApiContext = request.app.state.context
    return context


_bearer = HTTPBearer(auto_error=False, description="An API key from TRIGGERS_API_KEYS.")

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

    def check(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> None:
        context = _context(request)
        header = f"Bearer {credentials.credentials}" if credentials else None
        context.auth.authorize(header, scope, request.path_params.get("uid"))

    return Depends(check)
