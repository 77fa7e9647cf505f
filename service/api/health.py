"""Liveness and readiness, and the descriptions behind the problem ``type`` URIs."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from redis.exceptions import RedisError

from service.api.context import context
from service.api.draining import DRAINING
from service.api.problems import KINDS, ProblemError
from service.api.schemas import Health
from service.heartbeat import count_alive

router = APIRouter(tags=["operations"])


@router.get("/healthz", response_model=Health, summary="The process is up")
async def healthz() -> Health:
    return Health(status="ok")


@router.get(
    "/readyz",
    response_model=Health,
    responses={503: {"model": Health}},
    summary="Redis answers: the service can take requests",
)
async def readyz(request: Request) -> Health | JSONResponse:
    """503 while draining (after SIGTERM), when Redis does not answer or the engine's scripts
    are not loaded there (a restarted Redis lost them: they are loaded again on first use).
    ``workers`` reports how many are alive; none alive does not make the API unready (it can
    still take fires; the work waits), but the field and /healthz/workers tell it."""
    if DRAINING.is_set():
        body = Health(status="draining", checks={"draining": "SIGTERM received"})
        return JSONResponse(body.model_dump(), status_code=503)
    engine = context(request).engine
    prefix = context(request).settings.key_prefix
    try:
        await engine.client.ping()
        loaded = await engine.scripts.loaded()
        alive = await count_alive(engine.client, prefix)
    except (RedisError, OSError) as error:
        body = Health(status="unavailable", checks={"redis": f"{type(error).__name__}: {error}"})
        return JSONResponse(body.model_dump(), status_code=503)
    if not loaded:
        try:
            await engine.load_scripts()
        except (RedisError, OSError) as error:
            body = Health(status="unavailable", checks={"redis": "ok", "scripts": str(error)})
            return JSONResponse(body.model_dump(), status_code=503)
    return Health(status="ok", checks={"redis": "ok", "scripts": "ok", "workers": str(alive)})


@router.get("/problems/{kind}", summary="What a problem type means", include_in_schema=False)
async def problem_type(kind: str) -> dict[str, object]:
    if kind not in KINDS:
        raise ProblemError("not-found", f"no problem type {kind!r}")
    status, title = KINDS[kind]
    return {"type": f"/problems/{kind}", "status": status, "title": title}
