"""The Python task bench/e2e.py chains (loaded by its worker via TRIGGERS_TASK_MODULES)."""

from __future__ import annotations

from service.worker.python_tasks import TaskContext, task


@task
def bench_hop(context: TaskContext) -> dict[str, int]:
    return {"hop": 1}
