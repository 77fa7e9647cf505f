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
import signal
import threading
from typing import Any

from dramatiq import Worker

from service.settings import Settings

log = logging.getLogger(__name__)


def start_worker(settings: Settings, threads: int | None = None) -> Worker:
    """A started Dramatiq worker in this process (the actors module sets up the broker)."""
    from service.worker import actors

    worker = Worker(
        actors.broker,
        worker_threads=threads or settings.worker_threads,
        worker_timeout=settings.worker_poll_ms,
    )
    worker.start()
    log.info("worker started: %d threads, %d ms idle poll", worker.worker_threads,
             settings.worker_poll_ms)  # fmt: skip
    return worker


def serve_metrics(settings: Settings, index: int) -> None:
    """Process ``index``'s own /metrics port (TRIGGERS_METRICS_PORT + index), if set."""
    if settings.metrics_port is None:
        return
    from service.metrics import serve_worker_metrics

    port = settings.metrics_port + index
    serve_worker_metrics(settings.metrics_host, port)
    log.info("metrics on http://%s:%d/metrics", settings.metrics_host, port)


def _worker_process(threads: int, index: int = 0) -> None:
    from service.logs import configure

    configure(logging.INFO)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    settings = Settings()
    serve_metrics(settings, index)
    worker = start_worker(settings, threads)
    stop.wait()
    worker.stop(timeout=30_000)


def run_workers(processes: int, threads: int) -> int:
    """Start ``processes`` worker processes and wait; SIGTERM/SIGINT stop them gracefully."""
    context = multiprocessing.get_context("spawn")
    children = [
        context.Process(target=_worker_process, args=(threads, i), name=f"triggers-worker-{i}")
        for i in range(processes)
    ]
    for child in children:
        child.start()

    def forward(signum: int, frame: Any) -> None:
        for child in children:
            if child.pid and child.is_alive():
                child.terminate()

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for child in children:
        child.join()
    return max((child.exitcode or 0) for child in children)
