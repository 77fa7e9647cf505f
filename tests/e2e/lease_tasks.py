"""A Python task for the lease tests (loaded by their workers via TRIGGERS_TASK_MODULES)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from service.worker.python_tasks import TaskContext, task


@task
def until_cancelled(context: TaskContext) -> dict[str, Any]:
    """A first attempt works (up to 60 s) until its run is cancelled, then, like a task that
    does not check, tries to fire ``late`` into the session; later attempts fire it at once.
    Each attempt then writes what happened to ``<cfg.folder>/<attempt>.json``."""
    until = time.monotonic() + (60 if context.attempt == 1 else 0)
    cancelled = False
    while time.monotonic() < until and not cancelled:
        time.sleep(0.05)
        cancelled = bool(getattr(context, "cancelled", False))
    try:
        context.fire("late", {"attempt": context.attempt})
        fired = "fired"
    except Exception as error:  # TaskCancelled: the context refuses a cancelled run
        fired = type(error).__name__
    report = {"cancelled": cancelled, "fire": fired}
    folder = Path(context.kwargs["cfg"]["folder"])
    written = folder / f"{context.attempt}.json.part"
    written.write_text(json.dumps(report))
    written.rename(folder / f"{context.attempt}.json")  # whole: the test polls for the file
    return {"attempt": context.attempt}
