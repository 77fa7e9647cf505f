"""Running workers: ``triggers worker`` (N processes of M threads) and the in-process worker of
``triggers serve``.

Dramatiq's own CLI cannot set the worker's idle poll (``worker_timeout``, 1000 ms by default,
which would add up to a second to every hop of a cascade), so workers are started here with
``TRIGGERS_WORKER_POLL_MS`` (default 20 ms: one cheap Lua fetch per queue per idle process
every 20 ms).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
from multiprocessing import resource_tracker
from typing import Protocol

from dramatiq import Worker
from dramatiq.broker import Broker

from service.settings import Settings

log = logging.getLogger(__name__)


PREFETCH_PER_THREAD = 4
"""Messages a worker process holds per thread (Dramatiq's default: 2). A Redis consumer whose
window is full sleeps its idle backoff (growing to the poll, 20 ms) before it looks again; with
two per thread, the queued half of the window ran out meanwhile and the threads waited for
messages a third of the time under a backlog (py-spy of bench/pipeline.py's worker: in
``Queue.get``), since each of our runs lasts longer than a bare actor's. Four per thread keep
work queued across the sleep. Dramatiq's ``dramatiq_queue_prefetch`` variable, if set, wins."""


class Stoppable(Protocol):
    """A started worker: Dramatiq's ``Worker`` or the asyncio consumer's ``AsyncWorker``."""

    worker_threads: int

    def stop(self, timeout: int = ...) -> None: ...


def start_worker(settings: Settings, threads: int | None = None) -> Stoppable:
    """A started worker in this process (the actors module sets up the broker): the asyncio
    consumer on a Redis broker (service/worker/consumer.py) unless TRIGGERS_WORKER_CONSUMER
    says ``dramatiq``; Dramatiq's Worker on RabbitMQ."""
    from dramatiq.brokers.redis import RedisBroker

    from service.worker import actors

    count = threads or settings.worker_threads
    worker: Stoppable
    if isinstance(actors.broker, RedisBroker) and settings.worker_consumer == "asyncio":
        from service.worker.consumer import AsyncWorker

        worker = AsyncWorker(settings, count)
        worker.start()
        kind = "asyncio consumer"
    else:
        worker = dramatiq_worker(actors.broker, settings, count)
        kind = "Dramatiq worker"
    log.info("worker started (%s): %d tasks at once, %d ms idle poll", kind, count,
             settings.worker_poll_ms)  # fmt: skip
    return worker


def dramatiq_worker(broker: Broker, settings: Settings, threads: int) -> Worker:
    worker = Worker(broker, worker_threads=threads, worker_timeout=settings.worker_poll_ms)
    if not os.environ.get("dramatiq_queue_prefetch"):  # noqa: SIM112 (Dramatiq spells it so)
        worker.queue_prefetch = PREFETCH_PER_THREAD * worker.worker_threads
    worker.start()
    return worker


def serve_metrics(settings: Settings, index: int) -> None:
    """Process ``index``'s own /metrics port (TRIGGERS_METRICS_PORT + index), if set."""
    if settings.metrics_port is None:
        return
    from service.metrics import serve_worker_metrics

    port = settings.metrics_port + index
    serve_worker_metrics(settings.metrics_host, port)
    log.info("metrics on http://%s:%d/metrics", settings.metrics_host, port)


# Stop signals are taken with sigwait, never by a Python handler. A worker under dumb-init gets
# SIGTERM twice (dumb-init signals the process group, and the parent forwards it): a handler
# calling threading.Event.set could run again inside the first call's lock and deadlock the
# process, which then ignored every later signal until SIGKILL (seen in CI's container test).
# Blocked first, before any thread starts: every thread inherits the mask, so the signal waits
# for sigwait instead of landing in a thread with Python's default action.
STOP_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT})
# The parent also wakes for SIGCHLD (a child ended), waiting with sigwait and no timeout:
# CPython's sigtimedwait, interrupted (EINTR) past its deadline, returns an uninitialised
# siginfo instead of None, and Linux interrupts it so whenever the process is stopped and
# continued (SIGSTOP/SIGCONT: bench/pipeline.py holds the worker that way), which the parent took
# for a stop signal and ended its children. glibc's sigwait resumes after EINTR.
PARENT_SIGNALS = STOP_SIGNALS | {signal.SIGCHLD}


def _worker_process(threads: int, index: int = 0) -> None:
    from service.logs import configure

    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGCHLD})  # the parent's, inherited
    configure(logging.INFO)
    settings = Settings()
    serve_metrics(settings, index)
    worker = start_worker(settings, threads)
    signal.sigwait(STOP_SIGNALS)
    worker.stop(timeout=30_000)


def run_workers(processes: int, threads: int) -> int:
    """Start ``processes`` worker processes and wait; SIGTERM/SIGINT stop them gracefully.

    The children inherit the blocked stop signals (spawn keeps the mask across exec): one that
    arrives while a child still imports waits for its sigwait instead of killing it (exit 143).
    """
    # multiprocessing's resource tracker, started with the first child, unblocks SIGINT and
    # SIGTERM in this process once it runs: start it before blocking them.
    resource_tracker.ensure_running()
    signal.pthread_sigmask(signal.SIG_BLOCK, PARENT_SIGNALS)  # before a child can end
    context = multiprocessing.get_context("spawn")
    children = [
        context.Process(target=_worker_process, args=(threads, i), name=f"triggers-worker-{i}")
        for i in range(processes)
    ]
    for child in children:
        child.start()
    while any(child.is_alive() for child in children):
        if signal.sigwait(PARENT_SIGNALS) == signal.SIGCHLD:
            continue  # a child ended (or the resource tracker): look again
        for child in children:
            if child.is_alive():
                child.terminate()
    for child in children:
        child.join()
    return max((child.exitcode or 0) for child in children)
