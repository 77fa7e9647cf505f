"""Session routes: configuration, fire, the session's state, unresolved tasks, delete."""

from __future__ import annotations

from collections.abc import Iterable

from fastapi import APIRouter, FastAPI, Request, Response
from starlette.routing import BaseRoute

from service.api.context import context
from service.api.json_body import StrictJsonRoute
from service.api.params import Uid, mutating_problems, problems
from service.api.problems import FieldError, ProblemError
from service.api.schemas import (
    ConfigBody,
    ConfigInput,
    ConfigPatch,
    FireAnswer,
    FireBody,
    SessionAnswer,
    UnresolvedTasksAnswer,
)
from service.api.views import (
    fire_answer,
    json_bytes,
    json_response,
    session_answer,
    unresolved_task_view,
    waits_for_workers,
)
from service.engine import SessionConfig, Subscription, TaskConfig, UnresolvedInstance
from service.engine.index import SessionIndex
from service.heartbeat import count_alive
from service.logs import bind_contextvars
from service.webhooks.runner import WebhookRunner

WEBHOOKS_RUNNER = WebhookRunner.key

router = APIRouter(tags=["sessions"], route_class=StrictJsonRoute)


def check_runners(body: ConfigInput, known: Iterable[str]) -> None:
    """Every ``using`` names a runner this service has (else the instance could only fail
    with UnknownRunner when it is due). The webhooks runner runs events, not tasks."""
    runners = sorted(set(known) - {WEBHOOKS_RUNNER})
    errors = [
        FieldError(
            field=f"body.tasks.{name}.using",
            message=f"no runner {task.using!r}: one of {', '.join(runners)}",
        )
        for name, task in body.tasks.items()
        if task.using not in runners
    ]
    if errors:
        raise ProblemError("validation-error", errors[0].message, errors=errors)


async def _configure(uid: str, body: ConfigInput, request: Request, replace: bool) -> ConfigBody:
    ctx = context(request)
    check_runners(body, ctx.dispatcher.runners)
    tasks: dict[str, TaskConfig] = dict(body.tasks)
    webhooks: list[Subscription] | None = None if body.webhooks is None else list(body.webhooks)
    config = SessionConfig(tasks=tasks, webhooks=webhooks)
    async with ctx.idempotency.request(uid, request) as idem:
        result = await ctx.engine.configure(uid, config, replace=replace, idempotency=idem)
    return ConfigBody(tasks=result.tasks, webhooks=result.webhooks)


@router.patch(
    "/sessions/{uid}/config",
    response_model=ConfigBody,
    responses=mutating_problems(),
    summary="Merge tasks into the configuration (tasks named replace those of that name)",
)
async def patch_config(uid: Uid, body: ConfigPatch, request: Request) -> ConfigBody:
    return await _configure(uid, body, request, replace=False)


@router.put(
    "/sessions/{uid}/config",
    response_model=ConfigBody,
    responses=mutating_problems(),
    summary="Replace the whole configuration",
)
async def put_config(uid: Uid, body: ConfigInput, request: Request) -> ConfigBody:
    return await _configure(uid, body, request, replace=True)


@router.get(
    "/sessions/{uid}/config",
    response_model=ConfigBody,
    responses=problems(404),
    summary="The session's configuration",
)
async def get_config(request: Request, uid: Uid) -> ConfigBody:
    ctx = context(request)
    config = await ctx.engine.get_config(uid)
    return ConfigBody(tasks=config.tasks, webhooks=config.webhooks)


@router.post(
    "/sessions/{uid}/fire",
    response_model=FireAnswer,
    responses=mutating_problems(),
    summary="Fire a trigger (creates the session if it does not exist)",
)
async def fire(uid: Uid, body: FireBody, request: Request) -> Response:
    ctx = context(request)
    async with ctx.idempotency.request(uid, request) as idem:
        bind_contextvars(trigger=body.trigger)
        outcome = await ctx.engine.fire(uid, body.trigger, body.kwargs, idempotency=idem)
    await ctx.after(uid, outcome)
    return fire_answer(uid, body.trigger, outcome)


def match_fire_first(app: FastAPI) -> BaseRoute:
    """The fire route once more, unlisted (the OpenAPI document keeps ``router``'s), as the
    app's first route; returns it. FastAPI tries an app's routes in order, and an included
    router's routes twice (to choose the router, then the route): a fire used to fail about a
    dozen matches (the documentation routes, the configuration routes) before its own. Call it
    after the routers are included. (Most fires do not reach the router at all: the front
    layer answers them, fast_fire.py; this route answers the others.)"""
    app.router.add_api_route(
        "/sessions/{uid}/fire", fire, methods=["POST"], response_model=FireAnswer,
        responses=mutating_problems(), include_in_schema=False,
        route_class_override=StrictJsonRoute,
    )  # fmt: skip
    route = app.router.routes.pop()
    app.router.routes.insert(0, route)
    return route


@router.get(
    "/sessions/{uid}",
    response_model=SessionAnswer,
    responses=problems(404),
    summary="The whole state of a session",
)
async def get_session(request: Request, uid: Uid) -> Response:
    """At most TRIGGERS_PAGE_SIZE instances (the first page of the listing, then
    ``instancesNext``), so one request decodes a bounded amount however big the session."""
    ctx = context(request)
    snapshot = await ctx.engine.snapshot(uid, max_instances=ctx.settings.page_size)
    return await json_response(session_answer(snapshot), len(snapshot.instances))


@router.get(
    "/sessions/{uid}/tasks/unresolved",
    response_model=UnresolvedTasksAnswer,
    responses=problems(404),
    summary="Tasks with no instance yet or an unresolved one, and what they wait for",
)
async def unresolved_tasks(request: Request, uid: Uid) -> Response:
    ctx = context(request)
    tasks, instances = await ctx.engine.unresolved(uid, full=False)
    by_task: dict[str, list[UnresolvedInstance]] = {}
    for instance in instances:
        by_task.setdefault(instance.task, []).append(instance)
    alive = None
    if any(waits_for_workers(t, by_task.get(t.name, [])) for t in tasks):
        alive = await count_alive(ctx.engine.client, ctx.settings.key_prefix)

    def render() -> bytes:
        views = [unresolved_task_view(t, by_task.get(t.name, []), alive) for t in tasks]
        return UnresolvedTasksAnswer(tasks=views).model_dump_json().encode()

    return await json_bytes(render, len(instances))


@router.delete(
    "/sessions/{uid}",
    status_code=204,
    response_class=Response,
    responses=mutating_problems(),
    summary="Delete the session and everything in it (204 also when it did not exist)",
)
async def delete_session(uid: Uid, request: Request) -> Response:
    ctx = context(request)
    async with ctx.idempotency.request(uid, request) as idem:
        await ctx.engine.delete(uid, idempotency=idem)  # deliveries and events included
    await SessionIndex(ctx.engine.client, ctx.engine.prefix).forget(uid)
    return Response(status_code=204)
