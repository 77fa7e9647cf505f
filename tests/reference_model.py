"""A small, pure-Python reference model of the engine's semantics (SEMANTICS.md B, C, D, H, I).

It is written from the specification, not from the Lua scripts, and keeps only what the
property tests compare: task definitions in their stored form (B9), instances (name, status,
kwargs, abandonState, parent/depth), the per-task instance counter (C4) and ``latest_kwargs``
(C3). No withParams (E1 is then the identity), no runner, no hooks, no finalization (L1: the
engine under test runs with ``finalize=False``), no timestamps.

Every changing operation returns the fires it made, each as a :class:`Fire` with the instances
it scheduled and abandoned in dispatch order: relevant tasks in configuration order (D4), and
within a task its instances by number, the new one last (D8).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

Kwargs = dict[str, Any]

RESOLVED = frozenset({"finished", "abandoned", "skipped", "replayed"})  # I4


class ModelError(Exception):
    """A refusal the engine must also make."""


class RingError(ModelError):
    """Configuration refused: a ring of andEvery cascades (M12; the engine's InvalidError)."""


class NotFound(ModelError):
    """Unknown instance (H6; the engine's NotFoundError)."""


class InvalidState(ModelError):
    """A transition the instance's status does not allow (H6; the engine's ConflictError)."""


def dedupe(names: list[str]) -> list[str]:
    return list(dict.fromkeys(names))


@dataclass
class TaskDef:
    """A task in its stored form (B9): ``after`` is the effective set, andEvery included."""

    after: list[str]
    unless: list[str]
    every: str | None

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> TaskDef:
        every = config.get("andEvery") or None  # B4: "" and null mean absent
        after = list(config["after"])
        if every is not None:
            after.append(every)
        return cls(
            after=dedupe(after), unless=dedupe(list(config.get("unless") or [])), every=every
        )


@dataclass
class Inst:
    task: str
    status: str = "unstarted"
    kwargs: Kwargs = field(default_factory=dict)
    abandon: list[str] = field(default_factory=list)
    parent: str | None = None
    depth: int = 0
    result: Kwargs | None = None


@dataclass
class Fire:
    trigger: str
    scheduled: list[str] = field(default_factory=list)
    abandoned: list[str] = field(default_factory=list)


def number_of(name: str) -> int:
    return int(name.rsplit("#", 1)[1])


class Model:
    def __init__(self) -> None:
        self.tasks: dict[str, TaskDef] = {}  # insertion order = configuration order (B1)
        self.instances: dict[str, Inst] = {}
        self.counts: dict[str, int] = {}  # C4: instances of each task created so far
        self.latest: dict[str, Kwargs] = {}  # C3

    def copy(self) -> Model:
        return copy.deepcopy(self)

    # -- B: configuration -------------------------------------------------------------------

    def configure(self, tasks: dict[str, dict[str, Any]]) -> None:
        """B1 merge: each named task replaced whole, position kept; others kept. Creates no
        instance (D13). Refuses a ring of andEvery cascades (M12) and then changes nothing."""
        merged = dict(self.tasks)
        for name, config in tasks.items():
            merged[name] = TaskDef.from_config(config)
        if has_every_ring(merged):
            raise RingError("ring of andEvery cascades")
        self.tasks = merged

    # -- I3: meta-statuses ------------------------------------------------------------------

    def can_abandon(self, inst: Inst) -> bool:
        task = self.tasks.get(inst.task)
        return (
            task is not None
            and inst.status == "unstarted"
            and bool(task.unless)
            and all(trigger in inst.abandon for trigger in task.unless)
        )

    def can_run(self, inst: Inst) -> bool:
        task = self.tasks.get(inst.task)
        return (
            task is not None
            and inst.status == "unstarted"
            and all(trigger in inst.kwargs for trigger in task.after)
            and not self.can_abandon(inst)
        )

    # -- D: firing --------------------------------------------------------------------------

    def instances_of(self, task: str) -> list[str]:
        names = [name for name, inst in self.instances.items() if inst.task == task]
        return sorted(names, key=number_of)

    def new_instance(self, task: str) -> str:
        number = self.counts.get(task, 0)  # C4: = number of instances of the task so far
        self.counts[task] = number + 1
        name = f"{task}#{number}"
        self.instances[name] = Inst(task=task)
        return name

    @staticmethod
    def absorb(inst: Inst, task: TaskDef, trigger: str, kwargs: Kwargs) -> bool:
        """D6; True when the instance stored the trigger under its kwargs (after side)."""
        if inst.status != "unstarted":
            return False
        took = False
        if trigger in task.after and trigger not in inst.kwargs:
            inst.kwargs[trigger] = copy.deepcopy(kwargs)
            took = True
        if trigger in task.unless and trigger not in inst.abandon:
            inst.abandon.append(trigger)
        return took

    def fire(self, trigger: str, kwargs: Kwargs | None = None) -> Fire:
        kwargs = {} if kwargs is None else kwargs  # D1
        record = Fire(trigger)
        for task_name, task in self.tasks.items():  # D4: configuration order
            if trigger not in task.after and trigger not in task.unless:  # D3
                continue
            existing = self.instances_of(task_name)
            absorbed = False
            for name in existing:
                if self.absorb(self.instances[name], task, trigger, kwargs):
                    absorbed = True
            if not existing or (trigger == task.every and not absorbed):
                name = self.new_instance(task_name)
                inst = self.instances[name]
                for other in task.after:  # D7: pre-fill from the latest values before this fire
                    if other != trigger and other in self.latest:
                        inst.kwargs[other] = copy.deepcopy(self.latest[other])
                inst.abandon = [t for t in task.unless if t != trigger and t in self.latest]
                self.absorb(inst, task, trigger, kwargs)
            for name in self.instances_of(task_name):  # D8: abandon beats run
                inst = self.instances[name]
                if self.can_abandon(inst):
                    inst.status = "abandoned"
                    record.abandoned.append(name)
                elif self.can_run(inst):
                    inst.status = "scheduled"  # D10
                    record.scheduled.append(name)
        self.latest[trigger] = copy.deepcopy(kwargs)  # D9
        return record

    # -- E/F: running -----------------------------------------------------------------------

    def get(self, name: str) -> Inst:
        if name not in self.instances:
            raise NotFound(name)
        return self.instances[name]

    def claim(self, name: str) -> Kwargs:
        """scheduled -> running (E5); returns the kwargs the task receives (no withParams)."""
        inst = self.get(name)
        if inst.status != "scheduled":
            raise InvalidState(f"{name} is {inst.status}")
        inst.status = "running"
        return copy.deepcopy(inst.kwargs)

    def complete(self, name: str, result: Kwargs) -> list[Fire]:
        """running -> finished, then the cascade fire(task name, result) (F2, F4)."""
        inst = self.get(name)
        if inst.status != "running":
            raise InvalidState(f"{name} is {inst.status}")
        inst.status = "finished"
        inst.result = copy.deepcopy(result)
        return [self.fire(inst.task, result)]

    def fail(self, name: str) -> list[Fire]:
        """running -> failed, no cascade (F3)."""
        inst = self.get(name)
        if inst.status != "running":
            raise InvalidState(f"{name} is {inst.status}")
        inst.status = "failed"
        return []

    # -- H: operator operations -------------------------------------------------------------

    def replay(self, name: str, kwargs: Kwargs | None = None) -> str:
        """H1: failed -> replayed; the clone (next number, abandonState copied, parent's kwargs
        or exactly the replacement) is scheduled at once without can_run/can_abandon checks."""
        parent = self.get(name)
        if parent.status != "failed":
            raise InvalidState(f"{name} is {parent.status}")
        parent.status = "replayed"
        clone_name = self.new_instance(parent.task)
        clone = self.instances[clone_name]
        clone.abandon = list(parent.abandon)
        clone.kwargs = copy.deepcopy(parent.kwargs if kwargs is None else kwargs)
        clone.parent = name
        clone.depth = parent.depth + 1
        clone.status = "scheduled"
        return clone_name

    def skip(self, name: str, cascade: bool = False, result: Kwargs | None = None) -> list[Fire]:
        """H2: failed -> skipped; with cascade, fire(task name, result or {})."""
        inst = self.get(name)
        if inst.status != "failed":
            raise InvalidState(f"{name} is {inst.status}")
        inst.status = "skipped"
        result = {} if result is None else result
        inst.result = copy.deepcopy(result)
        return [self.fire(inst.task, result)] if cascade else []

    # -- views ------------------------------------------------------------------------------

    def names_with(self, *statuses: str) -> list[str]:
        return sorted(
            (name for name, inst in self.instances.items() if inst.status in statuses),
            key=lambda name: (name.rsplit("#", 1)[0], number_of(name)),
        )


def has_every_ring(tasks: dict[str, TaskDef]) -> bool:
    """True when following andEvery links (task -> the task named by its andEvery) loops (M12).

    Each task has at most one andEvery, so the links form a functional graph: walk from every
    task until the walk leaves the tasks or meets a task seen on this walk.
    """
    for start in tasks:
        seen: set[str] = set()
        current: str | None = start
        while current is not None and current in tasks:
            if current in seen:
                return True
            seen.add(current)
            current = tasks[current].every
    return False
