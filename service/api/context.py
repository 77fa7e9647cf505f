"""What every request handler shares: the engine, the authenticator, idempotency, settings.

Built once per process by the app's lifespan (one Redis connection pool per process) and
reached by handlers through ``context(request)``.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from service.api.auth import Authenticator
from service.api.idempotency import IdempotencyStore
from service.engine import Engine, Outcome
from service.managers import Manager
from service.settings import Settings
from service.worker.dispatch import Dispatcher


@dataclass
class ApiContext:
    settings: Settings
    engine: Engine
    manager: Manager
    auth: Authenticator
    idempotency: IdempotencyStore
    dispatcher: Dispatcher

    async def after(self, uid: str, outcome: Outcome) -> None:
        """After a committed change: hand what it scheduled to the runners at once (the
        sweeper covers a crash before this point), then the manager's hooks."""
        await self.dispatcher.dispatch(uid, outcome)
        await self.manager.after_transition(uid, outcome)


def context(request: Request) -> ApiContext:
    """The process's context. Called by handlers directly rather than declared as a FastAPI
    dependency: solving dependencies was the largest share of a fire's cost (bench/api.py)."""
    found: ApiContext = request.app.state.context
    return found
