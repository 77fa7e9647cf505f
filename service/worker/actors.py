"""The Dramatiq actors that run instances and deliver webhooks.

Importing this module sets up the broker from the settings (as Dramatiq apps do); ``triggers
worker`` and the in-process worker of ``triggers serve`` load it. Messages carry
``(uid, instance)``; the claim script decides whether there is anything to do, so duplicate or
late messages are harmless, and Dramatiq's own retries are off (retries are the engine's).

The actors' bodies are plain coroutine functions (``HANDLERS``, by actor name): the asyncio
consumer (service/worker/consumer.py) awaits them on its own loop; Dramatiq's worker (RabbitMQ,
or TRIGGERS_WORKER_CONSUMER=dramatiq) runs them through the actors and the AsyncIO middleware.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import dramatiq

from service import tracing
from service.engine import NotFoundError
from service.logs import bind_contextvars
from service.settings import Settings
from service.worker.broker import QUEUE, ensure_broker
from service.worker.liveness import HeartbeatMiddleware, TraceContextMiddleware
from service.worker.runtime import WorkerRuntime
from service.worker.sweeper import SweeperMiddleware

broker = ensure_broker(Settings())
broker.add_middleware(SweeperMiddleware())
broker.add_middleware(HeartbeatMiddleware())
broker.add_middleware(TraceContextMiddleware())

_runtime: WorkerRuntime | None = None
_runtime_lock = threading.Lock()

DAY_MS = 24 * 3600 * 1000
log = logging.getLogger(__name__)


def runtime() -> WorkerRuntime:
    """The process's runtime (made on the worker's event loop thread, on first use)."""
    global _runtime
    with _runtime_lock:
        if _runtime is None:
            _runtime = WorkerRuntime(Settings())
        return _runtime


def forget_runtime() -> None:
    """Drop the runtime (closed by its worker, whose event loop it belonged to)."""
    global _runtime
    with _runtime_lock:
        _runtime = None


async def run_instance_body(uid: str, name: str) -> None:
    bind_contextvars(uid=uid, instance=name, task=name.rpartition("#")[0])  # this run's lines
    try:
        with tracing.consuming("run_instance", uid=uid, instance=name):
            delay = await runtime().execute(uid, name)
    except NotFoundError as gone:  # the session was deleted meanwhile: nothing left to do
        log.info("%s %s: dropped, the session or instance is gone (%s)", uid, name, gone)
        return
    if delay is not None:  # early: cooling down; come back when due
        await resend(run_instance, (uid, name), delay)


async def deliver_webhook_body(uid: str, delivery_id: str, chain: int = 0) -> None:
    bind_contextvars(uid=uid, delivery=delivery_id)
    with tracing.consuming("deliver_webhook", uid=uid, delivery=delivery_id):
        delay = await runtime().deliver(uid, delivery_id, chain)
    if delay is not None:  # not taken: try again on the schedule
        await resend(deliver_webhook, (uid, delivery_id, chain), int(delay * 1000))


async def resend(actor: Any, args: tuple[Any, ...], delay_ms: int) -> None:
    """The message again, delayed, sent before this one is acked (from the event loop: a
    blocking send would stall every run of the asyncio consumer's loop)."""
    sender = runtime().sender
    await sender.send(actor, args, delay_ms)
    await sender.drain()


run_instance = dramatiq.actor(actor_name="run_instance", queue_name=QUEUE, max_retries=0,
                              time_limit=DAY_MS)(run_instance_body)  # fmt: skip
deliver_webhook = dramatiq.actor(actor_name="deliver_webhook", queue_name=QUEUE, max_retries=0,
                                 time_limit=DAY_MS)(deliver_webhook_body)  # fmt: skip
HANDLERS: dict[str, Callable[..., Awaitable[None]]] = {
    "run_instance": run_instance_body,
    "deliver_webhook": deliver_webhook_body,
}
