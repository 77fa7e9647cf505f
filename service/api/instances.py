"""Instance routes: listing, unresolved instances, one instance, and operator transitions."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, Request, Response

from service import metrics
from service.api.context import context
from service.api.json_body import StrictJsonRoute
from service.api.params import InstanceName, Uid, mutating_problems, problems
from service.api.problems import FieldError, ProblemError
from service.api.schemas import (
    InstancesAnswer,
    ReplayAnswer,
    ReplayBody,
    SkipBody,
    StatusBody,
    UnresolvedInstancesAnswer,
)
from service.api.views import (
    instance_response,
    json_bytes,
    json_response,
    unresolved_instances_json,
)
from service.engine import Engine, Instance, InvalidError
from service.engine.models import Name, Status

router = APIRouter(tags=["instances"], route_class=StrictJsonRoute)


@router.get(
    "/sessions/{uid}/instances",
    response_model=InstancesAnswer,
    responses=problems(404),
    summary="Instances, optionally filtered by status and task",
)
async def list_instances(
    request: Request,
    uid: Uid,
    status: Annotated[Status | None, Query()] = None,
    task: Annotated[Name | None, Query()] = None,
    cursor: Annotated[
        str | None,
        Query(max_length=2000, description="The `next` of the previous page (same filters)."),
    ] = None,
    limit: Annotated[
        int | None,
        Query(ge=1, description="Instances per page: 1 to TRIGGERS_PAGE_SIZE (its default)."),
    ] = None,
) -> Response:
    """One page of instances; ``next`` continues it. Without ``status`` they come by task then
    number; with it, pages follow the status index (task, then instance name as text); a
    listing that fits in one page is sorted by task then number."""
    ctx = context(request)
    if limit is not None and limit > ctx.settings.page_size:
        raise _query_problem("limit", f"at most {ctx.settings.page_size} (TRIGGERS_PAGE_SIZE)")
    try:
        instances, following = await ctx.engine.instances_page(
            uid, status=status, task=task, cursor=cursor, limit=limit
        )
    except InvalidError as error:  # the cursor: a query parameter, not a body field
        raise _query_problem("cursor", error.message.removeprefix("cursor: ")) from None
    answer = InstancesAnswer(instances=instances, next=following)
    return await json_response(answer, len(instances))


def _query_problem(name: str, message: str) -> ProblemError:
    return ProblemError(
        "validation-error",
        f"{name}: {message}",
        errors=[FieldError(field=f"query.{name}", message=message)],
    )


@router.get(
    "/sessions/{uid}/instances/unresolved",
    response_model=UnresolvedInstancesAnswer,
    responses=problems(404),
    summary="Unresolved instances, each with the triggers it misses and why it waits",
)
async def unresolved_instances(request: Request, uid: Uid) -> Response:
    ctx = context(request)
    instances = await ctx.engine.unresolved_instances(uid)
    return await json_bytes(lambda: unresolved_instances_json(instances), len(instances))


@router.get(
    "/sessions/{uid}/instances/{name}",
    response_model=Instance,
    responses=problems(404),
    summary="One instance",
)
async def get_instance(request: Request, uid: Uid, name: InstanceName) -> Instance:
    ctx = context(request)
    return await ctx.engine.instance(uid, name)


@router.post(
    "/sessions/{uid}/instances/{name}/replay",
    response_model=ReplayAnswer,
    responses=mutating_problems(404),
    summary="Replay a failed instance as a new instance",
)
async def replay(
    uid: Uid,
    name: InstanceName,
    request: Request,
    body: Annotated[ReplayBody | None, Body()] = None,
) -> ReplayAnswer:
    ctx = context(request)
    kwargs = body.kwargs if body else None
    async with ctx.idempotency.request(uid, request) as idem:
        outcome = await ctx.engine.replay(uid, name, kwargs, idempotency=idem)
    await ctx.after(uid, outcome)
    if outcome.record is not None:
        await ctx.manager.after_replay(uid, outcome.record)
    assert outcome.clone is not None
    return ReplayAnswer(replayed=name, instance=outcome.clone)


@router.post(
    "/sessions/{uid}/instances/{name}/skip",
    response_model=Instance,
    responses=mutating_problems(404),
    summary="Skip a failed instance, optionally firing its cascade",
)
async def skip(
    uid: Uid,
    name: InstanceName,
    request: Request,
    body: Annotated[SkipBody | None, Body()] = None,
) -> Instance:
    ctx = context(request)
    body = body or SkipBody()
    async with ctx.idempotency.request(uid, request) as idem:
        outcome = await ctx.engine.skip(
            uid, name, cascade=body.cascade, result=body.result, idempotency=idem
        )
    await ctx.after(uid, outcome)
    assert outcome.record is not None
    await ctx.manager.after_skip(uid, outcome.record, body.cascade)
    return outcome.record


@router.post(
    "/sessions/{uid}/instances/{name}/status",
    response_model=Instance,
    responses=mutating_problems(404),
    summary="Set an instance's status (external workers, operators); optional cascade",
)
async def set_status(
    uid: Uid,
    name: InstanceName,
    body: StatusBody,
    request: Request,
) -> Response:
    # what external workers call once per task: the answer is serialized once
    ctx = context(request)
    async with ctx.idempotency.request(uid, request) as idem:
        outcome = await ctx.engine.set_status(
            uid, name, body.status, metadata=body.metadata, cascade=body.cascade,
            cascade_kwargs=body.cascadeKwargs, idempotency=idem,
        )  # fmt: skip
    await ctx.after(uid, outcome)
    assert outcome.record is not None
    await count_external_end(ctx.engine, uid, outcome.record)
    return instance_response(outcome.record)


ENDS: dict[str, metrics.InstanceOutcome] = {
    "finished": "finished", "failed": "failed", "skipped": "skipped",
}  # fmt: skip


async def count_external_end(engine: Engine, uid: str, record: Instance) -> None:
    """An external worker's report ends its instance: counted here, the only place it is seen
    (one read of the task's runner; reports about other runners' instances are operators'
    corrections of instances their workers already counted)."""
    ended = ENDS.get(record.status)
    if ended is None:
        return
    task = (await engine.get_config(uid)).tasks.get(record.task)
    if task is not None and task.using == "external":
        metrics.count_instance("external", ended)


@router.patch(
    "/sessions/{uid}/instances/{name}/metadata",
    response_model=Instance,
    responses=mutating_problems(404),
    summary="Merge keys into an instance's metadata",
)
async def patch_metadata(
    uid: Uid,
    name: InstanceName,
    body: Annotated[dict[str, Any], Body(examples=[{"reviewedBy": "ops"}])],
    request: Request,
) -> Instance:
    ctx = context(request)
    async with ctx.idempotency.request(uid, request) as idem:
        return await ctx.engine.set_metadata(uid, name, body, idempotency=idem)


@router.post(
    "/sessions/{uid}/instances/{name}/logs-resolved",
    response_model=Instance,
    responses=mutating_problems(404),
    summary="Mark an instance's error logs as looked at",
)
async def logs_resolved(uid: Uid, name: InstanceName, request: Request) -> Instance:
    ctx = context(request)
    async with ctx.idempotency.request(uid, request) as idem:
        return await ctx.engine.mark_logs_resolved(uid, name, idempotency=idem)
