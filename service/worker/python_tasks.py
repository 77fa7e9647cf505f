"""Python tasks: ``run`` names a function registered in the workers.

Where names come from: the entry point group ``triggers.tasks`` (``name = package.module:func``)
and the modules listed in ``TRIGGERS_TASK_MODULES``, whose functions decorated with
``@task`` (or ``@task("name")``) register under their name. A task is ``def`` or
``async def`` and receives a ``TaskContext``; ``def`` tasks run in a thread.

The context gives: ``kwargs`` (per trigger, withParams merged), ``validate(Model)``,
``fire(trigger, kwargs)`` into the same session, ``retry(cooldown=, kwargs=)``,
``skip(metadata)``, a ``logger`` whose highest level is recorded as ``logLevel``,
``TaskError(message, context)`` for failures that carry context, and ``cancelled``: true once
the run lost its lease (its outcome is then discarded and ``fire`` raises TaskCancelled).
Returning a dict (or nothing) finishes the instance with that result; returning anything else
truthy fails it (F2).
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import logging
import threading
import traceback
from collections.abc import Awaitable, Callable
from importlib.metadata import entry_points
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, ValidationError

from service.worker.outcome import TaskOutcome
from service.worker.task_threads import TaskThreads

TASKS_GROUP = "triggers.tasks"
TaskFunction = Callable[["TaskContext"], Any]
M = TypeVar("M", bound=BaseModel)

_decorated: dict[str, TaskFunction] = {}


def task(name: str | TaskFunction | None = None) -> Any:
    """Register a function as a Python task (under ``name``, default its own name)."""

    def register(function: TaskFunction, key: str | None = None) -> TaskFunction:
        _decorated[key or function.__name__] = function
        return function

    if callable(name):
        return register(name)
    return lambda function: register(function, name)


class TaskError(Exception):
    """A failure that carries context, recorded as exceptionContext."""

    def __init__(self, message: str, context: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.context = context or {}


class TaskCancelled(Exception):
    """The run was cancelled (its lease was lost: another worker may run the instance now);
    raised by the context's calls that would change the session, so a cancelled run that
    does not check ``context.cancelled`` still cannot act."""


class RetryRequested(Exception):
    def __init__(self, cooldown: float, kwargs: dict[str, Any] | None) -> None:
        super().__init__("retry requested")
        self.cooldown = cooldown
        self.kwargs = kwargs


class SkipRequested(Exception):
    def __init__(self, metadata: dict[str, Any] | None) -> None:
        super().__init__("skip requested")
        self.metadata = metadata or {}


TASK_LOGGER = logging.getLogger("triggers.task")
"""The one logger of every task's lines: a logger per instance name (``getLogger`` of a new
name, its level set) cost O(loggers) per task, 7.6 ms at 50,000 names, and was never freed.
The instance rides along as context (``extra``; the worker binds it too)."""
TASK_LOGGER.setLevel(logging.DEBUG)


class TaskLogger(logging.LoggerAdapter):  # type: ignore[type-arg]
    """A task's logger: records the highest level it logged (``logLevel``, I5) and tags each
    line with the instance. Every level method of LoggerAdapter goes through ``log``."""

    def __init__(self, instance: str) -> None:
        super().__init__(TASK_LOGGER, {"instance": instance})
        self.highest = 0

    def log(self, level: int, msg: object, *args: Any, **kwargs: Any) -> None:
        if self.logger.isEnabledFor(level):
            self.highest = max(self.highest, level)
        super().log(level, msg, *args, **kwargs)

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        """The instance added to the caller's own ``extra`` (not replacing it)."""
        kwargs["extra"] = {**(self.extra or {}), **(kwargs.get("extra") or {})}
        return msg, kwargs


class TaskContext:
    def __init__(
        self,
        uid: str,
        instance: str,
        attempt: int,
        kwargs: dict[str, Any],
        fire: Callable[[str, dict[str, Any] | None], Awaitable[Any]],
        loop: asyncio.AbstractEventLoop,
        *,
        cancelled: threading.Event | None = None,
    ) -> None:
        self.session = uid
        self.instance = instance
        self.attempt = attempt
        self.kwargs = kwargs
        self._fire = fire
        self._loop = loop
        self._cancelled = cancelled or threading.Event()
        self.logger = TaskLogger(instance)

    @property
    def cancelled(self) -> bool:
        """True once the run was cancelled: stop, its outcome will be discarded. (An ``async
        def`` task is also cancelled at its next ``await``; a ``def`` task runs in a thread
        that cannot be stopped from outside, so a long one should check this now and then.)"""
        return self._cancelled.is_set()

    def _check_cancelled(self) -> None:
        if self._cancelled.is_set():
            raise TaskCancelled(f"the run of {self.instance} was cancelled (lease lost)")

    @property
    def log_level(self) -> int:
        return self.logger.highest

    def close(self) -> None:
        """Nothing to release since the context has no logger of its own (kept for callers)."""

    def validate(self, model: type[M], trigger: str | None = None) -> M:
        """The kwargs (of one trigger, or all of them) validated into ``model``; a validation
        error fails the task with the errors as context."""
        data = self.kwargs.get(trigger, {}) if trigger else self.kwargs
        try:
            return model.model_validate(data)
        except ValidationError as error:
            errors = orjson.loads(error.json(include_url=False))  # JSON-safe, unlike errors()
            raise TaskError("kwargs do not validate", {"errors": errors}) from None

    def retry(self, cooldown: float = 0.0, kwargs: dict[str, Any] | None = None) -> None:
        raise RetryRequested(cooldown, kwargs)

    def skip(self, metadata: dict[str, Any] | None = None) -> None:
        raise SkipRequested(metadata)

    async def fire_async(self, trigger: str, kwargs: dict[str, Any] | None = None) -> Any:
        """Fire a trigger into this session; TaskCancelled once the run was cancelled (checked
        on the event loop, where the cancellation is decided, right before the fire)."""
        self._check_cancelled()
        return await self._fire(trigger, kwargs)

    def fire(self, trigger: str, kwargs: dict[str, Any] | None = None) -> Any:
        """Fire a trigger into this session (from a ``def`` task, which runs in a thread)."""
        self._check_cancelled()
        coroutine = self.fire_async(trigger, kwargs)
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(30)


class PythonTaskRegistry:
    threads: TaskThreads | None = None
    """Where ``def`` tasks run: set by the asyncio consumer (task_threads.py); otherwise
    ``asyncio.to_thread`` (the loop's default executor)."""

    def __init__(self, modules: list[str]) -> None:
        for module in modules:
            importlib.import_module(module)
        self.tasks: dict[str, TaskFunction] = dict(_decorated)
        for point in entry_points(group=TASKS_GROUP):
            self.tasks.setdefault(point.name, point.load())

    def find(self, name: str) -> TaskFunction | None:
        return self.tasks.get(name)

    async def run(self, name: str, context: TaskContext) -> TaskOutcome:
        function = self.find(name)
        if function is None:
            return TaskOutcome.failure(
                "triggers.UnknownTask",
                f"no Python task named {name!r} is registered in this worker "
                f"(entry point group {TASKS_GROUP} or TRIGGERS_TASK_MODULES)",
            )
        try:
            if inspect.iscoroutinefunction(function):
                value = await function(context)
            else:
                value = await self._in_thread(function, context)
        except RetryRequested as retry:
            return TaskOutcome("retry", cooldown=retry.cooldown, kwargs=retry.kwargs,
                               log_level=context.log_level)  # fmt: skip
        except SkipRequested as skip:
            return TaskOutcome("skip", metadata=skip.metadata)
        except Exception as error:
            context.logger.error("task %s failed: %s", name, error)
            kind = type(error)
            return TaskOutcome.failure(
                f"{kind.__module__}.{kind.__qualname__}",
                traceback.format_exc(),
                getattr(error, "context", None)
                if isinstance(getattr(error, "context", None), dict)
                else {},
                context.log_level,
            )
        finally:
            context.close()
        return result_outcome(value, context.log_level)

    async def _in_thread(self, function: TaskFunction, context: TaskContext) -> Any:
        if self.threads is not None:
            return await self.threads.run(function, context)
        return await asyncio.to_thread(function, context)


def result_outcome(value: Any, level: int) -> TaskOutcome:
    """F2: falsy -> {}; a dict -> the result; anything else truthy -> failure."""
    if not value:
        return TaskOutcome("finished", result={}, log_level=level)
    if isinstance(value, dict):
        return TaskOutcome("finished", result=value, log_level=level)
    return TaskOutcome.failure(
        "builtins.ValueError", f"a task must return a JSON object, not {type(value).__name__}",
        {"actual_result": repr(value)[:2000]}, level,
    )  # fmt: skip
