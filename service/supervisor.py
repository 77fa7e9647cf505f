"""``triggers serve --workers N``: N API processes on one listening socket, one of the rest.

One API process is one event loop on one core; a fire spends its CPU in Python, so a second
process is what lets a 2-core machine answer more fires. The parent (``triggers serve``)
keeps everything that must exist once:

* the listening socket, bound first (a busy port fails the start before anything runs), and
  shared with every API process (they all ``accept`` on it: no SO_REUSEPORT, so a process that
  dies leaves its queued connections to the others instead of resetting them);
* the data directory's lock and the embedded Redis (started once, stopped after the last API
  process has exited);
* the in-process Dramatiq worker group, with its sweeper and its heartbeat: one of each, not N
  (the API processes only send messages);
* with ``TRIGGERS_METRICS_PORT`` set, per-process metrics ports: the parent (worker, sweeper)
  on the port itself, API process *i* (0-based) on the port + 1 + *i*. The API's ``/metrics``
  answers from whichever process took the connection (its own series, plus the
  deployment-wide gauges, which are read at scrape time and so are the same everywhere).
  Chosen over prometheus-client's multiprocess mode for the reasons in service/metrics.py.

Signals: the API processes are in their own process group, so a Ctrl-C in the terminal
reaches only the parent, which forwards every SIGTERM and SIGINT it gets to each API process
(SIGTERM: each one drains, ``TRIGGERS_DRAIN_SECONDS`` with ``/readyz`` 503, then shuts down
gracefully; SIGINT or a second signal: at once). When all have exited the parent stops the
worker and Redis and exits 0.

A dead API process: an API process that exits while nobody asked it to is logged (which, its
pid, its exit code or signal) and replaced by a new one on the same socket, so one crashed or
OOM-killed process costs its open requests only. One that dies before it is ready (its app
did not start: a broken setting, Redis refused) is not restarted, since it would only die
again: the parent stops the others and exits non-zero (4 at start, 1 later). An API process
whose parent disappears (SIGKILL) sees its pipe close and stops itself.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import multiprocessing
import os
import signal
import socket
import threading
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from types import FrameType
from typing import Any

log = logging.getLogger("triggers.supervisor")

READY = "ready"
"""What an API process sends on its pipe once uvicorn has started (app up, socket served)."""

EXIT_FAILED = 1
EXIT_CANNOT_START = 4


@dataclass
class ApiProcess:
    """One API process as the parent sees it."""

    index: int
    process: BaseProcess
    pipe: Connection  # the parent's end: READY arrives on it; closing it tells the child
    ready: bool = False


def exit_description(process: BaseProcess) -> str:
    """'exited with code 3' or 'was killed by SIGKILL'."""
    code = process.exitcode
    if code is not None and code < 0:
        return f"was killed by {signal.Signals(-code).name}"
    return f"exited with code {code}"


class Supervisor:
    """Starts ``count`` API processes on ``sock``, replaces dead ones, forwards signals."""

    def __init__(self, count: int, sock: socket.socket, args: argparse.Namespace) -> None:
        self.count = count
        self.sock = sock
        self.args = args
        self.context = multiprocessing.get_context("spawn")
        self.children: dict[int, ApiProcess] = {}
        self.signals: list[int] = []
        self.stopping = False
        self.all_ready = False
        self.code = 0
        self.wake_read, self.wake_write = os.pipe()

    def start(self, index: int) -> None:
        parent_end, child_end = self.context.Pipe()
        process = self.context.Process(
            target=api_process,
            args=(index, self.sock, child_end, self.args),
            name=f"triggers-api-{index}",
        )
        process.start()
        child_end.close()  # the child holds the only other end: EOF tells either side
        self.children[index] = ApiProcess(index, process, parent_end)
        log.info("API process %d started (pid %s)", index, process.pid)

    def run(self) -> int:
        """Until every API process has exited; the exit code for `triggers serve`."""
        previous = {sig: signal.signal(sig, self.on_signal) for sig in (signal.SIGTERM,
                                                                        signal.SIGINT)}  # fmt: skip
        try:
            for index in range(self.count):
                self.start(index)
            while self.children:
                self.step()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            os.close(self.wake_read)
            os.close(self.wake_write)
        return self.code

    def on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.signals.append(signum)
        os.write(self.wake_write, b"!")

    def step(self) -> None:
        """Wait for a signal, a READY or an exit, and act on it."""
        waiting: list[Any] = [self.wake_read]
        for child in self.children.values():
            waiting.append(child.process.sentinel)
            if not child.ready:
                waiting.append(child.pipe)
        woken = wait(waiting)
        if self.wake_read in woken:
            os.read(self.wake_read, 64)
        while self.signals:
            self.stop(self.signals.pop(0))
        for child in list(self.children.values()):
            if child.pipe in woken:
                self.on_message(child)
            if child.process.sentinel in woken or not child.process.is_alive():
                self.on_exit(child)

    def on_message(self, child: ApiProcess) -> None:
        try:
            child.ready = child.pipe.recv() == READY
        except EOFError:
            return  # it is exiting: its sentinel says so
        if not self.all_ready and all(c.ready for c in self.children.values()):
            self.all_ready = len(self.children) == self.count
            if self.all_ready:
                log.info("serving on http://%s:%d with %d API processes", self.args.host,
                         self.args.port, self.count)  # fmt: skip

    def on_exit(self, child: ApiProcess) -> None:
        child.process.join()
        child.pipe.close()
        del self.children[child.index]
        what = f"API process {child.index} (pid {child.process.pid}) " + exit_description(
            child.process
        )
        if self.stopping:
            if child.process.exitcode:
                log.warning("%s while stopping", what)
            return
        if not child.ready:
            log.error("%s before it was ready: not restarting it; stopping", what)
            self.code = EXIT_FAILED if self.all_ready else EXIT_CANNOT_START
            self.stop(signal.SIGTERM)
            return
        log.error("%s; starting another", what)
        self.start(child.index)

    def stop(self, signum: int) -> None:
        """Forward ``signum`` to every API process; no more restarts from now on."""
        if not self.stopping:
            self.stopping = True
            name = signal.Signals(signum).name
            log.info("%s: stopping %d API processes", name, len(self.children))
            self.sock.close()  # the API processes hold their own copies until they stop
        for child in self.children.values():
            if child.process.pid is not None and child.process.is_alive():
                os.kill(child.process.pid, signum)


def api_process(index: int, sock: socket.socket, pipe: Connection,
                args: argparse.Namespace) -> None:  # fmt: skip
    """An API process: uvicorn on the shared socket until the parent forwards a signal."""
    os.setpgid(0, 0)  # a terminal's Ctrl-C goes to the parent only, which forwards it once
    from service import tracing
    from service.cli import load_settings, run_api
    from service.logs import configure
    from service.worker.process import serve_metrics

    configure(logging.INFO)
    tracing.setup("triggers-api")
    settings = load_settings()
    serve_metrics(settings, index + 1)  # the parent (worker, sweeper) has the first port
    threading.Thread(target=watch_parent, args=(pipe,), daemon=True).start()
    signal.signal(signal.SIGTERM, exit_quietly)
    with contextlib.suppress(KeyboardInterrupt):
        run_api(settings, args, sock, on_started=lambda: pipe.send(READY))


def exit_quietly(signum: int, frame: FrameType | None) -> None:
    """uvicorn raises the signal that stopped it again once it is done: exit 0 then."""
    raise SystemExit(0)


def watch_parent(pipe: Connection) -> None:
    """The parent never writes after start: EOF means it is gone, so stop now (SIGINT)."""
    try:
        while True:
            pipe.recv()
    except (EOFError, OSError):
        os.kill(os.getpid(), signal.SIGINT)
