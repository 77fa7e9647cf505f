"""What every request handler shares: the engine, the authenticator, idempotency, settings.

Built once per process by the app's lifespan (one Redis connection pool per process) and
reached by handlers through the ``Ctx`` dependency.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, Request

from service.api.auth import Authenticator
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
