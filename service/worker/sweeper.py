"""The sweeper: re-dispatches stranded work, at most one active across all workers.

Every ``TRIGGERS_SWEEP_INTERVAL`` seconds, the worker holding the sweeper lock (a Redis lock
with a token, renewed each pass; another worker takes over within a few intervals if this one
dies) walks the pending index and, per session, re-sends:

* outbox entries due for longer than ``TRIGGERS_SWEEP_GRACE`` (the process that committed them
  died before its enqueue, or a message was lost);
* running instances whose lease expired (their worker died): claim takes them again, attempt
  + 1, and the dead worker's late answer is refused for its stale token.

Sessions with an empty outbox and no lease leave the index. We do not wait for Dramatiq's own
dead-worker maintenance, which can take many minutes on an idle queue (DESIGN.md section 2).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time

from dramatiq.middleware import Middleware

from service.settings import Settings
from service.worker.backoff import Backoff, one_line
from service.worker.runtime import WorkerRuntime

log = logging.getLogger(__name__)


class Sweeper:
    def __init__(self, runtime: WorkerRuntime) -> None:
        self.runtime = runtime
        self.settings = runtime.settings
        self.lock = runtime.engine.client.lock(
            f"{self.settings.key_prefix}:sweeper",
            timeout=self.settings.sweep_interval * 3,
            blocking=False,
        )
        self.swept = 0

    async def pass_once(self) -> int:
        """One sweep over the pending index; returns how many instances were re-sent."""
        engine, sent = self.runtime.engine, 0
        grace_ms = int(self.settings.sweep_grace * 1000)
        for uid, _mark in await engine.pending_sessions():
            seen_at = int(time.time() * 1000)
            found = await engine.sweep(uid, grace_ms)
            entries = [*found.stranded, *found.expired]
            if entries:
                log.warning("sweeper: re-dispatching %s of session %s",
                            ", ".join(e.name for e in entries), uid)  # fmt: skip
                await self.runtime.dispatcher.hand_over(uid, entries)
                sent += len(entries)
            elif found.outbox == 0 and found.leases == 0:
                await engine.prune_pending(uid, seen_at)
        self.swept += sent
        return sent

    async def lead(self) -> bool:
        """Whether this sweeper holds the lock for the next interval (renewing it if so)."""
        if await self.lock.owned():
            return bool(await self.lock.reacquire())
        return bool(await self.lock.acquire())

    async def run(self, stop: threading.Event) -> None:
        backoff = Backoff(self.settings.sweep_interval)
        while not stop.is_set():
            try:
                if await self.lead():
                    await self.pass_once()
                backoff.reset()
            except Exception as error:
                log.warning("sweeper pass failed: %s; next try in %.1f s",
                            one_line(error), backoff.current)  # fmt: skip
                await asyncio.sleep(backoff.next_delay())
                continue
            await asyncio.sleep(self.settings.sweep_interval)
        if await self.lock.owned():
            await self.lock.release()


class SweeperMiddleware(Middleware):
    """Starts the sweeper loop in its own thread when a worker boots, stops it on shutdown."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None

    def after_worker_boot(self, broker: object, worker: object) -> None:
        self.stop.clear()
        self.thread = threading.Thread(target=self._main, name="triggers-sweeper", daemon=True)
        self.thread.start()

    def before_worker_shutdown(self, broker: object, worker: object) -> None:
        self.stop.set()
        if self.thread is not None:
            self.thread.join(10)

    def _main(self) -> None:
        """Runs until shutdown; a failure (Redis away at start-up, say) restarts it."""

        async def main() -> None:
            runtime = WorkerRuntime(Settings())
            try:
                await Sweeper(runtime).run(self.stop)
            finally:
                await runtime.aclose()

        backoff = Backoff(Settings().sweep_interval)
        while not self.stop.is_set():
            try:
                asyncio.run(main())
            except Exception as error:
                log.warning("sweeper failed: %s; restarting it in %.1f s",
                            one_line(error), backoff.current)  # fmt: skip
                self.stop.wait(backoff.next_delay())
