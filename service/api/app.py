"""The FastAPI application: routes, error handling, limits, and the per-process resources.

``create_app(settings)`` needs ``settings.redis_url`` (``triggers serve`` sets it to the
embedded Redis when none is configured). One Redis connection pool per process, opened by the
lifespan; the engine's scripts are loaded at start-up.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from service import tracing
from service.api import (
    events,
    health,
    instances,
    openapi,
    operations,
    problems,
    sessions,
    ui,
    webhooks,
)
from service.api.auth import Authenticator, parse_api_keys
from service.api.context import ApiContext
from service.api.fast_fire import FastFire
from service.api.front import Front
from service.api.idempotency import IdempotencyStore
from service.engine import Engine
from service.factory import build_engine, build_manager
from service.settings import Settings
from service.worker.broker import ensure_broker
from service.worker.dispatch import Dispatcher, load_runners

log = logging.getLogger("service.api")

DESCRIPTION = """
Schedule work on combinations of events. Fire named triggers into a session; the session's
tasks run when their conditions are met (`after` all of some triggers, in any order, `unless`
others, `andEvery` time a trigger fires); finished tasks fire their own names so tasks chain.
Errors are `application/problem+json` (RFC 9457). Mutating requests accept `Idempotency-Key`.
"""


async def check_redis_policy(engine: Engine, settings: Settings) -> None:
    """State is a database here, not a cache: eviction would silently erase sessions (M10)."""
    try:
        policy = (await engine.client.config_get("maxmemory-policy")).get("maxmemory-policy")
    except Exception as error:  # managed Redis may forbid CONFIG
        log.warning("could not read maxmemory-policy (%s); make sure it is noeviction", error)
        return
    if policy != "noeviction":
        message = (
            f"Redis maxmemory-policy is {policy!r}, not 'noeviction': Redis may evict sessions "
            "under memory pressure. Set maxmemory-policy noeviction (and appendonly yes)."
        )
        if settings.strict_redis:
            raise RuntimeError(message)
        log.warning(message)


def authenticator(settings: Settings) -> Authenticator:
    keys = parse_api_keys(settings.api_keys)
    if settings.auth == "off":
        log.warning(
            "AUTHENTICATION IS OFF (TRIGGERS_AUTH=off): anyone who can reach this port can "
            "read, fire into, reconfigure and delete every session"
        )
    elif not keys:
        log.warning("TRIGGERS_AUTH is on and TRIGGERS_API_KEYS is empty: every request gets 401")
    return Authenticator(keys, enabled=settings.auth == "on")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    auth = authenticator(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if not settings.redis_url:
            raise RuntimeError("TRIGGERS_REDIS_URL is not set (triggers serve sets it)")
        app.state.broker = ensure_broker(settings)  # the runner sends with these settings
        manager = build_manager(settings)
        engine = build_engine(settings, settings.redis_url, manager)
        await engine.load_scripts()
        await check_redis_policy(engine, settings)
        app.state.context = ApiContext(
            settings=settings,
            engine=engine,
            manager=manager,
            auth=auth,
            idempotency=IdempotencyStore(engine, settings.idempotency_ttl),
            dispatcher=Dispatcher(engine, load_runners(), settings),
        )
        try:
            yield
        finally:
            await engine.aclose()

    app = FastAPI(
        title="Triggers",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    problems.install(app)
    app.include_router(sessions.router)
    app.include_router(instances.router)
    app.include_router(webhooks.router)
    app.include_router(events.router)
    if settings.ui:
        ui.install(app)
    app.include_router(health.router)
    app.include_router(operations.router)
    fire_route = sessions.match_fire_first(app)  # the hot route, tried first
    # one layer: request ID, metrics (401s and 413s too), the gate before any body is read,
    # the body's size limit and deadline, and most fires (fast_fire.py)
    app.add_middleware(
        Front, auth=auth, max_bytes=settings.max_body_bytes, body_seconds=settings.body_timeout,
        fire=FastFire(fire_route),
    )  # fmt: skip

    openapi.install(app)
    tracing.instrument_app(app)  # only when OTEL_EXPORTER_OTLP_ENDPOINT is set
    return app
