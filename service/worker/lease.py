"""Keeping a running instance's lease, and knowing when it is gone.

A claim gives the worker a lease (DESIGN.md section 2); the sweeper re-dispatches an instance
whose lease expired, and a second run then starts. So the lease must outlive short faults, and
a run whose lease is really gone must stop, or two runs of one instance overlap:

* renewals every quarter of the lease, so that a fault must outlast three quarters of it to
  cost the lease; a renewal that fails for any reason but a refusal (a connection error, Redis
  restarting, LOADING, or BUSY with a long script, a timeout) is retried with backoff (50 ms
  doubling up to a sixteenth of the lease, at most 1 s, so that a retry soon follows the end
  of the fault), each try bounded by the time the lease has left;
* the lease is lost when Redis refuses the renewal (CONFLICT: not running, or running under
  another token; NOT_FOUND: the session was deleted), or when its expiry comes without a
  successful renewal. The expiry is tracked on this process's monotonic clock from the moment
  each claim or renewal was *sent*, so it never runs later than the one Redis keeps, minus a
  margin (a twentieth of the lease, at most 0.5 s) left for stopping the run before another
  worker can claim it (which takes a sweep, a message and a claim after the expiry).

The keeper only says that the lease is lost; the runtime stops the run and reports nothing.

``watch`` keeps a run's lease from a timer: the renewal loop (a task of its own) starts only
when the first renewal is due, a quarter lease after the claim, so a run that ends sooner (most
do) costs one timer, not a task to create, cancel and unwind (bench/pipeline.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from service.engine import ConflictError, Engine, NotFoundError

log = logging.getLogger(__name__)

FIRST_BACKOFF = 0.05
MAX_BACKOFF = 1.0


class LeaseKeeper:
    """The lease of one run: ``keep()`` renews it while the run goes on and returns once it is
    lost (``lost`` set, ``reason`` says why); the caller then stops the run."""

    def __init__(self, engine: Engine, uid: str, name: str, token: str, sent_at: float) -> None:
        """``sent_at``: ``time.monotonic()`` taken before the claim was sent."""
        self.engine = engine
        self.uid = uid
        self.name = name
        self.token = token
        self.length = engine.lease_ms / 1000
        self.margin = min(0.5, self.length / 20)
        self.most_backoff = min(MAX_BACKOFF, self.length / 16)
        self.valid_until = sent_at + self.length
        self.lost = asyncio.Event()
        self.reason = ""
        self._timer: asyncio.TimerHandle | None = None
        self._renewal: asyncio.Task[None] | None = None

    def watch(self, on_lost: Callable[[], None]) -> None:
        """Keep the lease in the background until ``stop``; call ``on_lost`` (on the event
        loop) once it is lost. The first renewal is due a quarter lease from now, as in
        ``keep``; until then only a timer waits."""
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self.length / 4, self._start, on_lost)

    def _start(self, on_lost: Callable[[], None]) -> None:
        self._timer = None
        self._renewal = asyncio.create_task(self._keep_from_now(on_lost))

    async def _keep_from_now(self, on_lost: Callable[[], None]) -> None:
        """The first renewal at once (the timer waited its quarter lease), then ``keep``."""
        try:
            await self.renew()
        except Exception as error:  # as keep(): the lease can no longer be vouched for
            log.exception("%s %s: lease keeping failed", self.uid, self.name)
            self._lose(f"{type(error).__name__}: {error}")
        if not self.lost.is_set():
            await self.keep()
        on_lost()

    def stop(self) -> None:
        """Stop keeping the lease (the run ended): the timer or the renewal loop."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._renewal is not None:
            self._renewal.cancel()
            self._renewal = None

    async def keep(self) -> None:
        """Renews the lease until cancelled; returns once it is lost."""
        try:
            while not self.lost.is_set():
                await asyncio.sleep(self.length / 4)
                await self.renew()
        except Exception as error:  # a fault of ours: the lease can no longer be vouched for
            log.exception("%s %s: lease keeping failed", self.uid, self.name)
            self._lose(f"{type(error).__name__}: {error}")

    async def renew(self) -> None:
        """One renewal, retried until it succeeds or the lease is lost."""
        backoff = min(FIRST_BACKOFF, self.most_backoff)
        while True:
            sent = time.monotonic()
            left = self.valid_until - self.margin - sent
            if left <= 0:
                self._lose("it expired before a renewal succeeded")
                return
            try:
                async with asyncio.timeout(left):
                    await self.engine.renew_lease(self.uid, self.name, self.token)
            except (ConflictError, NotFoundError) as refused:
                self._lose(f"renewal refused: {refused}")
                return
            except Exception as error:  # transient until the expiry says otherwise
                log.warning("%s %s: lease renewal failed (%s: %s); retrying for %.1f s",
                            self.uid, self.name, type(error).__name__, error, left)  # fmt: skip
                await asyncio.sleep(min(backoff, max(0.0, left)))
                backoff = min(backoff * 2, self.most_backoff)
                continue
            self.valid_until = sent + self.length
            return

    def _lose(self, reason: str) -> None:
        self.reason = reason
        self.lost.set()
