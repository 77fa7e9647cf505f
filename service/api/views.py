"""Answers built from engine results, and the words that explain unresolved work."""

from __future__ import annotations

from collections.abc import Callable

import orjson
from fastapi.responses import Response
from pydantic import BaseModel, TypeAdapter

from service.api.schemas import (
    SessionAnswer,
    UnresolvedInstanceView,
    UnresolvedTaskView,
)
from service.engine import (
    Instance,
    Outcome,
    SessionSnapshot,
    UnresolvedInstance,
    UnresolvedTask,
)
from service.engine.engine import iso_time
from service.engine.reader import off_loop

REASON_NAMES = 20
"""Instances a task's reason names at most (a big session may have thousands)."""


async def json_bytes(render: Callable[[], bytes], records: int) -> Response:
    """``render()``'s JSON as the answer, run in a worker thread when it covers many records
    (building views of thousands of instances would otherwise block the event loop)."""
    return Response(await off_loop(records, render), media_type="application/json")


async def json_response(answer: BaseModel, records: int) -> Response:
    """The answer as JSON, serialized in a worker thread when it holds many records, so that a
    big read never blocks the event loop (other requests, /healthz) while it is encoded."""
    body = await off_loop(records, answer.model_dump_json)
    return Response(body, media_type="application/json")


def fire_body(uid: str, trigger: str, outcome: Outcome) -> bytes:
    """The fire's answer (``FireAnswer``, same fields in the same order), encoded at once with
    orjson: skipping FastAPI's re-validation of the response model and its generic encoder, a
    sizeable share of a fire's CPU time (bench/api.py). The route keeps
    ``response_model=FireAnswer`` for the OpenAPI document; a test checks the two agree. The
    front layer's fast path (fast_fire.py) answers these same bytes."""
    answer = {
        "uid": uid,
        "trigger": trigger,
        "scheduled": outcome.scheduled,
        "abandoned": outcome.abandoned,
        "finalized": outcome.finalized,
    }
    return orjson.dumps(answer)


def fire_answer(uid: str, trigger: str, outcome: Outcome) -> Response:
    """The fire route's answer: ``fire_body`` as application/json."""
    return Response(fire_body(uid, trigger, outcome), media_type="application/json")


def instance_response(record: Instance) -> Response:
    """An engine-built instance as the answer, serialized once: FastAPI would dump it, validate
    the dump against the response model and serialize that (the routes keep
    ``response_model=Instance`` for the OpenAPI document)."""
    return Response(record.model_dump_json(), media_type="application/json")


def session_answer(snapshot: SessionSnapshot) -> SessionAnswer:
    return SessionAnswer(
        uid=snapshot.uid,
        tasks=snapshot.tasks,
        instances=snapshot.instances,
        latestKwargs=snapshot.latestKwargs,
        finalized=snapshot.finalized,
        finalizedAt=iso_time(snapshot.finalizedAt) if snapshot.finalizedAt else None,
        created=iso_time(snapshot.created),
        updated=iso_time(snapshot.updated),
        version=snapshot.version,
        sessionId=snapshot.sessionId,
        webhooks=snapshot.webhooks,
        instanceCount=snapshot.instanceCount,
        instancesNext=snapshot.instancesNext,
    )


def instance_reason(instance: UnresolvedInstance) -> str:
    """Why an instance is not resolved, in one sentence."""
    if instance.status == "unstarted":
        if instance.waitingFor:
            return "waiting for " + ", ".join(instance.waitingFor)
        return "runnable: it is scheduled at the next fire of a trigger its task uses"
    if instance.status == "scheduled":
        return "scheduled: waiting for a worker to start it"
    if instance.status == "running":
        return f"running (attempt {instance.metadata.get('attempt', 1)})"
    error = instance.metadata.get("exceptionType", "error")
    return f"failed ({error}): blocks its cascade {instance.task!r} until replayed or skipped"


def unresolved_instance_view(instance: UnresolvedInstance) -> UnresolvedInstanceView:
    return UnresolvedInstanceView(**instance.model_dump(), reason=instance_reason(instance))


_UNRESOLVED_JSON: TypeAdapter[UnresolvedInstance] = TypeAdapter(UnresolvedInstance)


def unresolved_instances_json(instances: list[UnresolvedInstance]) -> bytes:
    """The UnresolvedInstancesAnswer of ``instances`` as JSON, one instance at a time: each
    serializer call holds the GIL only briefly, so the event loop keeps running while a
    worker thread encodes tens of thousands (one call for the whole answer held it for
    seconds). Same document as UnresolvedInstancesAnswer's, without building the views."""
    parts = [
        _UNRESOLVED_JSON.dump_json(instance)[:-1]
        + b',"reason":'
        + orjson.dumps(instance_reason(instance))
        + b"}"
        for instance in instances
    ]
    return b'{"instances":[' + b",".join(parts) + b"]}"


def waits_for_workers(task: UnresolvedTask, instances: list[UnresolvedInstance]) -> bool:
    """Whether the task has an instance a Dramatiq worker must start or finish."""
    return task.config.using != "external" and any(
        i.task == task.name and i.status in ("scheduled", "running") for i in instances
    )


def unresolved_task_view(
    task: UnresolvedTask, instances: list[UnresolvedInstance], workers_alive: int | None = None
) -> UnresolvedTaskView:
    """``workers_alive``: how many workers have a fresh heartbeat (None: not asked)."""
    mine = [i for i in instances if i.task == task.name]
    if mine:
        listed = ", ".join(f"{i.name} ({i.status})" for i in mine[:REASON_NAMES])
        more = len(mine) - REASON_NAMES
        reason = f"unresolved instances: {listed}" + (f" and {more} more" if more > 0 else "")
        if workers_alive == 0 and waits_for_workers(task, mine):
            reason = f"no worker alive: start `triggers worker` ({reason})"
    else:
        reason = "no instance yet: one is created by the next fire of " + ", ".join(
            task.config.after
        )
    return UnresolvedTaskView(
        **task.config.model_dump(), name=task.name, waitingFor=task.waitingFor, reason=reason
    )
