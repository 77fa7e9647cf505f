"""Python task registry and context (run in-process; the end-to-end tests run them in workers)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from service.worker.python_tasks import (
    TASKS_GROUP,
    PythonTaskRegistry,
    TaskContext,
    result_outcome,
)
from tests.support import installed_plugin

PLUGIN = """
def shout(context):
    context.logger.error("loud")
    return {"said": context.kwargs["go"]["word"].upper()}
"""


@pytest.fixture
def plugin_on_path(tmp_path: Path) -> Iterator[None]:
    with installed_plugin(
        tmp_path, "shout_plugin", PLUGIN, TASKS_GROUP, "shout = shout_plugin:shout"
    ):
        yield


def context(kwargs: dict[str, Any]) -> TaskContext:
    async def fire(trigger: str, kwargs: dict[str, Any] | None) -> None:
        raise AssertionError("not used")

    return TaskContext("s:1", "t#0", 1, kwargs, fire, asyncio.get_event_loop())


async def test_a_task_registered_through_an_entry_point_runs(plugin_on_path: None) -> None:
    registry = PythonTaskRegistry([])
    outcome = await registry.run("shout", context({"go": {"word": "hi"}}))
    assert outcome.kind == "finished" and outcome.result == {"said": "HI"}
    assert outcome.log_level == 40  # logger.error recorded as logLevel (I5)


async def test_tasks_from_listed_modules_and_unknown_names() -> None:
    registry = PythonTaskRegistry(["tests.tasks_for_tests"])
    assert registry.find("echo") is not None
    outcome = await registry.run("nope", context({}))
    assert outcome.kind == "failed" and outcome.exception_type == "triggers.UnknownTask"


async def test_validation_errors_fail_with_context() -> None:
    registry = PythonTaskRegistry(["tests.tasks_for_tests"])
    outcome = await registry.run("validated_page", context({"pageReceived": {"page": "x"}}))
    assert outcome.kind == "failed"
    assert outcome.exception_type == "service.worker.python_tasks.TaskError"
    assert outcome.exception_context["errors"][0]["loc"] == ["page"]


def test_results_follow_f2() -> None:
    assert result_outcome(None, 0).result == {}
    assert result_outcome([], 0).result == {}
    assert result_outcome({"a": 1}, 0).result == {"a": 1}
    failed = result_outcome("text", 20)
    assert failed.kind == "failed" and failed.exception_context == {"actual_result": "'text'"}
