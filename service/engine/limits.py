"""Size limits that keep every script short (issue 14, items 1 and 2).

A Lua script holds Redis for every session and every worker while it runs, so the work one
request may ask of a script is bounded here, and checked BEFORE any script runs (the scripts
check what depends on stored state: configure the merged configuration, fire/retry/replay the
instance count). The defaults keep the worst accepted input of every script under about 50 ms
on a small machine (bench/limits.py prints the figures). Each is a setting (README, Limits).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING

from service.engine.errors import LimitError

if TYPE_CHECKING:
    from service.engine.models import SessionConfig


@dataclass(frozen=True)
class Limits:
    """``0`` for any of them means no limit (for tests and benches only)."""

    max_tasks: int = 500
    """Tasks in one session's configuration (TRIGGERS_MAX_TASKS)."""
    max_triggers_per_list: int = 16
    """Triggers in one task's ``after`` (with its ``andEvery``) or ``unless``
    (TRIGGERS_MAX_TRIGGERS_PER_LIST)."""
    max_tasks_per_trigger: int = 250
    """Tasks one trigger concerns through after, andEvery or unless: a fire of it visits each
    (TRIGGERS_MAX_TASKS_PER_TRIGGER)."""
    max_instances: int = 100_000
    """Instances one session may hold; fires, retries and replays that would pass it are
    refused (TRIGGERS_MAX_INSTANCES)."""
    max_open_instances: int = 500
    """Unstarted instances one session may hold: a fire visits each unstarted instance of the
    tasks it concerns, so fires that could create more are refused
    (TRIGGERS_MAX_OPEN_INSTANCES)."""


def _over(limit: int, count: int) -> bool:
    return limit > 0 and count > limit


def check_config(config: SessionConfig, limits: Limits) -> None:
    """Refuse (LimitError naming the field and the setting) a configuration over a limit on its
    own. What depends on the stored configuration too (a merge) is checked by configure.lua."""
    if _over(limits.max_tasks, len(config.tasks)):
        raise LimitError(
            f"tasks: {len(config.tasks)} tasks, more than TRIGGERS_MAX_TASKS ({limits.max_tasks})"
        )
    users: Counter[str] = Counter()
    for name, task in config.tasks.items():
        for field, triggers in (("after", task.after), ("unless", task.unless)):
            if _over(limits.max_triggers_per_list, len(triggers)):
                raise LimitError(
                    f"tasks.{name}.{field}: {len(triggers)} triggers, more than "
                    f"TRIGGERS_MAX_TRIGGERS_PER_LIST ({limits.max_triggers_per_list})"
                )
        users.update(set(task.after) | set(task.unless))
    if not users:
        return
    trigger, count = users.most_common(1)[0]
    if _over(limits.max_tasks_per_trigger, count):
        name, task = next((n, t) for n, t in config.tasks.items() if trigger in t.after + t.unless)
        field = "after" if trigger in task.after else "unless"
        raise LimitError(
            f"tasks.{name}.{field}: trigger {trigger} concerns {count} tasks, more than "
            f"TRIGGERS_MAX_TASKS_PER_TRIGGER ({limits.max_tasks_per_trigger})"
        )
