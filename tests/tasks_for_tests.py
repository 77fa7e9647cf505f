"""Python tasks the end-to-end tests configure (loaded by workers via TRIGGERS_TASK_MODULES)."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from pydantic import BaseModel
from redis.asyncio import Redis

from service.worker.python_tasks import TaskContext, TaskError, task


class Page(BaseModel):
    page: int


@task
def echo(context: TaskContext) -> dict[str, Any]:
    return {"kwargs": context.kwargs, "attempt": context.attempt}


@task("validated_page")
def validated_page(context: TaskContext) -> dict[str, Any]:
    page = context.validate(Page, "pageReceived")
    return {"page": page.page}


@task
async def retry_until_depth(context: TaskContext) -> dict[str, Any]:
    wanted = int(context.kwargs.get("retries", {}).get("times", 2))
    seen = int(context.kwargs.get("seen", {}).get("n", 0))
    if seen < wanted:
        context.retry(cooldown=float(context.kwargs.get("retries", {}).get("cooldown", 0)),
                      kwargs={**context.kwargs, "seen": {"n": seen + 1}})  # fmt: skip
    return {"seen": seen}


@task
def always_retry(context: TaskContext) -> None:
    context.retry(cooldown=float(context.kwargs.get("cfg", {}).get("cooldown", 0)))


@task
def self_skip(context: TaskContext) -> None:
    context.skip({"why": "nothing to do"})


@task
def warn_then_finish(context: TaskContext) -> dict[str, Any]:
    context.logger.warning("careful")
    return {}


@task
def boom(context: TaskContext) -> None:
    raise TaskError("boom", {"where": "tests"})


@task
def not_an_object(context: TaskContext) -> Any:
    return [1, 2, 3]


@task
def fire_more(context: TaskContext) -> dict[str, Any]:
    context.fire("extra", {"from": context.instance})
    return {}


@task
def slow(context: TaskContext) -> dict[str, Any]:
    time.sleep(float(context.kwargs.get("cfg", {}).get("seconds", 5)))
    return {"slept": True}


@task
async def overlap_probe(context: TaskContext) -> dict[str, Any]:
    """Counts the probes running at once in the worker's Redis: ``<key>`` the ones running now,
    ``<key>:seen`` that count as each one started; each takes ``seconds`` (0.3)."""
    key, seconds = context.kwargs["cfg"]["key"], context.kwargs["cfg"].get("seconds", 0.3)
    client = Redis.from_url(os.environ["TRIGGERS_REDIS_URL"])
    try:
        await client.rpush(f"{key}:seen", await client.incr(key))
        await asyncio.sleep(seconds)
        await client.decr(key)
    finally:
        await client.aclose()
    return {}
