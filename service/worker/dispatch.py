"""Handing scheduled instances to their runners, then acknowledging them in the outbox.

A changing script returns ``dispatch`` entries (instance, runner key, due time). The
dispatcher looks the runner up by key in the ``triggers.runners`` registry and hands the
instance over: ``dramatiq`` sends a message, delayed until the due time; ``external`` does
nothing, the instance waits in ``scheduled`` for an outside worker to report its status.

An entry leaves the outbox when the instance is claimed (claim.lua), not when its message is
sent: a message lost after the send (a broker restart, a worker dying between fetch and
claim) would otherwise strand the instance in ``scheduled`` for good. The sweeper re-sends
entries due for longer than the grace period, at most once per period each, and claim makes
the duplicates harmless. Runners whose hand-over is final acknowledge: ``webhooks`` once the
deliveries are recorded (ackDispatched); ``external``, whose hand-over is a no-op, is settled at
commit (``Runner.settled_at_commit``): the dispatcher tells the engine these runners' keys and
the changing script itself leaves no outbox entry for them, so such a change is one script.
Entries the sweeper re-sends (an external retry that was cooling down) are acknowledged as usual.
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
from service.worker.runners import ActorSender

log = logging.getLogger(__name__)

FAILPOINT_AFTER_COMMIT = "after-commit-before-enqueue"


class Runner(Protocol):
    key: str
    acknowledges: bool
    """True when the hand-over is final (drop the outbox entry now); False when the instance
    stays in the outbox until a worker claims it."""

    async def dispatch(self, uid: str, name: str, delay_ms: int, scheduled_ms: int) -> None:
        """Hand ``name`` over, to run ``delay_ms`` from now. ``scheduled_ms``: when the instance
        became scheduled (ms since the epoch; 0: not known), which names this dispatch: the
        same for the sweeper's re-sends of it, new for a later dispatch (a retry)."""


def settled_at_commit(runner: Runner) -> bool:
    """Whether the runner's hand-over is a no-op, so the script may drop its due entries
    itself (an optional attribute: runners of other packages need not declare it)."""
    return bool(getattr(runner, "settled_at_commit", False))


class ExternalRunner:
    """An outside worker (any language) reports the instance's status through the API."""

    key = "external"
    acknowledges = True
    settled_at_commit = True  # nothing to hand over: the script acknowledges (see above)

    async def dispatch(self, uid: str, name: str, delay_ms: int, scheduled_ms: int) -> None:
        log.debug("instance %s of %s waits for an external worker", name, uid)


def load_runners() -> dict[str, Runner]:
    """Every runner of the triggers.runners registry (entry points), by key."""
    return all_of(runners)


class Dispatcher:
    def __init__(self, engine: Engine, runners: dict[str, Runner], settings: Settings) -> None:
        self.engine = engine
        self.runners = runners
        self.failpoint = settings.failpoint
        engine.settle_at_commit(key for key, r in runners.items() if settled_at_commit(r))
        engine.before_close(ActorSender.drain_all)  # batched messages go out before closing
        for runner in runners.values():
            bind = getattr(runner, "bind", None)
            if bind is not None:  # runners that read the session (webhooks) get the engine
                bind(engine, settings)

    async def dispatch(self, uid: str, outcome: Outcome) -> None:
        await self.hand_over(uid, outcome.dispatch, committed=True)
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

    async def hand_over(
        self, uid: str, entries: list[Dispatch], *, committed: bool = False
    ) -> None:
        """``committed``: the entries come straight from the outcome of a change, whose script
        kept no outbox entry for the due entries of the engine's settled runners (nor for the
        later ones an acknowledgement would leave anyway): those need no ackDispatched. Else
        (the sweeper's re-sends) every acknowledging runner's entry is acknowledged."""
        if not entries:
            return
        if self.failpoint == FAILPOINT_AFTER_COMMIT:
            # Models a death after the change's post-mark landed (batched, it goes out on the
            # next loop iteration, with the messages): recovery within the sweep grace. A death
            # before that iteration is recovered through the pre-mark, PREMARK_MS later.
            await self.engine.drain_marks()
            log.critical("failpoint %s: exiting before the enqueue", self.failpoint)
            os._exit(75)
        now = int(time.time() * 1000)
        settled = self.engine.settled_runners
        handed = []
        for entry in entries:
            runner = self.runners.get(entry.runner)
            if runner is None:
                await self._unknown_runner(uid, entry)
                continue
            try:
                await runner.dispatch(uid, entry.name, max(0, entry.due - now), entry.scheduled)
            except Exception:  # the change is committed: the sweeper re-sends, no error
                log.exception("%s %s: hand-over to %s failed; the sweeper will retry",
                              uid, entry.name, entry.runner)  # fmt: skip
                continue
            if runner.acknowledges and not (committed and entry.runner in settled):
                handed.append(entry.name)
        if handed:
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
        await self.hand_over(uid, outcome.dispatch, committed=True)  # its instanceFailed event
