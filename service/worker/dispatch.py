"""Handing scheduled instances to their runners, then acknowledging them in the outbox.

A changing script returns ``dispatch`` entries (instance, runner key, due time). The
dispatcher looks the runner up by key in the ``triggers.runners`` registry and hands the
instance over: ``dramatiq`` sends a message, delayed until the due time; ``external`` does
nothing, the instance waits in ``scheduled`` for an outside worker to report its status.

An entry leaves the outbox when the instance is claimed (claim.lua), not when its message is
sent: a message lost after the send (a broker restart, a worker dying between fetch and
claim) would otherwise strand the instance in ``scheduled`` for good. The sweeper re-sends
entries due for longer than the grace period, at most once per period each, and claim makes
the duplicates harmless. Runners whose hand-over is final (``external``) acknowledge at once.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Protocol

from service import metrics
from service.engine import Engine, Outcome
from service.engine.models import Dispatch
from service.registry import all_of, runners
from service.settings import Settings

log = logging.getLogger(__name__)

FAILPOINT_AFTER_COMMIT = "after-commit-before-enqueue"


class Runner(Protocol):
    key: str
    acknowledges: bool
    """True when the hand-over is final (drop the outbox entry now); False when the instance
    stays in the outbox until a worker claims it."""

    async def dispatch(self, uid: str, name: str, delay_ms: int) -> None: ...


class ExternalRunner:
    """An outside worker (any language) reports the instance's status through the API."""

    key = "external"
    acknowledges = True

    async def dispatch(self, uid: str, name: str, delay_ms: int) -> None:
        log.info("instance %s of %s waits for an external worker", name, uid)


def load_runners() -> dict[str, Runner]:
    """Every runner of the triggers.runners registry (entry points), by key."""
    return all_of(runners)


class Dispatcher:
    def __init__(self, engine: Engine, runners: dict[str, Runner], settings: Settings) -> None:
        self.engine = engine
        self.runners = runners
        self.failpoint = settings.failpoint
        for runner in runners.values():
            bind = getattr(runner, "bind", None)
            if bind is not None:  # runners that read the session (webhooks) get the engine
                bind(engine, settings)

    async def dispatch(self, uid: str, outcome: Outcome) -> None:
        await self.hand_over(uid, outcome.dispatch)
        await self.count_ends(uid, outcome)

    async def count_ends(self, uid: str, outcome: Outcome) -> None:
        """Metrics of what a change ended without a worker: a finalized session, abandoned
        instances (their task's kind read from the config, only then: abandons are rare)."""
        if outcome.finalized:
            metrics.SESSIONS_FINALIZED.inc()
        abandoned = outcome.abandoned
        if not abandoned:
            return
        try:
            tasks = (await self.engine.get_config(uid)).tasks
        except Exception:  # the session went meanwhile: count them as python tasks
            tasks = {}
        for name in abandoned:
            task = tasks.get(name.rpartition("#")[0])
            kind = metrics.task_kind(task.run, task.using) if task else "python"
            metrics.count_instance(kind, "abandoned")

    async def hand_over(self, uid: str, entries: list[Dispatch]) -> None:
        if not entries:
            return
        if self.failpoint == FAILPOINT_AFTER_COMMIT:
            log.critical("failpoint %s: exiting before the enqueue", self.failpoint)
            os._exit(75)
        now = int(time.time() * 1000)
        handed = []
        for entry in entries:
            runner = self.runners.get(entry.runner)
            if runner is None:
                await self._unknown_runner(uid, entry)
                continue
            try:
                await runner.dispatch(uid, entry.name, max(0, entry.due - now))
            except Exception:  # the change is committed: the sweeper re-sends, no error
                log.exception("%s %s: hand-over to %s failed; the sweeper will retry",
                              uid, entry.name, entry.runner)  # fmt: skip
                continue
            if runner.acknowledges:
                handed.append(entry.name)
        await self.engine.ack_dispatched(uid, handed)

    async def _unknown_runner(self, uid: str, entry: Dispatch) -> None:
        log.error("instance %s of %s: no runner %r", entry.name, uid, entry.runner)
        outcome = await self.engine.set_status(
            uid,
            entry.name,
            "failed",
            metadata={
                "exceptionType": "triggers.UnknownRunner",
                "exceptionInfo": f"no runner registered under {entry.runner!r} "
                f"(known: {', '.join(sorted(self.runners))})",
            },
        )
        await self.hand_over(uid, outcome.dispatch)  # its instanceFailed event, at once
