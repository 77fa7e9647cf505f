"""Liveness and readiness, and the descriptions behind the problem ``type`` URIs."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from redis.exceptions import RedisError

from service.api.context import context
from service.api.problems import KINDS, ProblemError
from service.api.schemas import Health

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
    try:
        await context(request).engine.client.ping()
    except (RedisError, OSError) as error:
        body = Health(status="unavailable", checks={"redis": f"{type(error).__name__}: {error}"})
        return JSONResponse(body.model_dump(), status_code=503)
    return Health(status="ok", checks={"redis": "ok"})


@router.get("/problems/{kind}", summary="What a problem type means", include_in_schema=False)
async def problem_type(kind: str) -> dict[str, object]:
    if kind not in KINDS:
        raise ProblemError("not-found", f"no problem type {kind!r}")
    status, title = KINDS[kind]
    return {"type": f"/problems/{kind}", "status": status, "title": title}
