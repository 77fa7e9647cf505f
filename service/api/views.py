"""Answers built from engine results, and the words that explain unresolved work."""

from __future__ import annotations

from service.api.schemas import (
    FireAnswer,
    SessionAnswer,
    UnresolvedInstanceView,
    UnresolvedTaskView,
)
from service.engine import Outcome, SessionSnapshot, UnresolvedInstance, UnresolvedTask
from service.engine.engine import iso_time


def fire_answer(uid: str, trigger: str, outcome: Outcome) -> FireAnswer:
    return FireAnswer(
        uid=uid,
        trigger=trigger,
        scheduled=outcome.scheduled,
        abandoned=outcome.abandoned,
        finalized=outcome.finalized,
    )


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
        listed = ", ".join(f"{i.name} ({i.status})" for i in mine)
        reason = f"unresolved instances: {listed}"
        if workers_alive == 0 and waits_for_workers(task, instances):
            reason = f"no worker alive: start `triggers worker` ({reason})"
    else:
        reason = "no instance yet: one is created by the next fire of " + ", ".join(
            task.config.after
        )
    return UnresolvedTaskView(
        **task.config.model_dump(), name=task.name, waitingFor=task.waitingFor, reason=reason
    )
