"""The Dramatiq actor that runs instances.

Importing this module sets up the broker from the settings (as Dramatiq apps do); ``triggers
worker`` and the in-process worker of ``triggers serve`` load it. Messages carry
``(uid, instance)``; the claim script decides whether there is anything to do, so duplicate or
late messages are harmless, and Dramatiq's own retries are off (retries are the engine's).
"""

from __future__ import annotations

import logging
import threading

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


@dramatiq.actor(queue_name=QUEUE, max_retries=0, time_limit=DAY_MS)
async def run_instance(uid: str, name: str) -> None:
    bind_contextvars(uid=uid, instance=name, task=name.rpartition("#")[0])  # this run's lines
    try:
        with tracing.consuming("run_instance", uid=uid, instance=name):
            delay = await runtime().execute(uid, name)
    except NotFoundError as gone:  # the session was deleted meanwhile: nothing left to do
        log.info("%s %s: dropped, the session or instance is gone (%s)", uid, name, gone)
        return
    if delay is not None:  # early: cooling down; come back when due
        run_instance.send_with_options(args=(uid, name), delay=delay)


@dramatiq.actor(queue_name=QUEUE, max_retries=0, time_limit=DAY_MS)
async def deliver_webhook(uid: str, delivery_id: str, chain: int = 0) -> None:
    bind_contextvars(uid=uid, delivery=delivery_id)
    with tracing.consuming("deliver_webhook", uid=uid, delivery=delivery_id):
        delay = await runtime().deliver(uid, delivery_id, chain)
    if delay is not None:  # not taken: try again on the schedule
        deliver_webhook.send_with_options(args=(uid, delivery_id, chain), delay=int(delay * 1000))
