"""The sweeper: re-dispatches stranded work, at most one active across all workers.

The pending index scores each session by when it next needs attention: the earliest outbox
entry's due time + ``TRIGGERS_SWEEP_GRACE``, the earliest lease expiry, the earliest webhook
delivery attempt's due time + grace. Every ``TRIGGERS_SWEEP_INTERVAL`` seconds the worker
holding the sweeper lock (a Redis lock with a token, renewed each pass; another worker takes
over within a few intervals if this one dies) reads only the sessions due by now, in batches,
until none is left or the pass has used its time budget (one interval), and per session
re-sends:

* outbox entries due for longer than the grace period (the process that committed them died
  before its enqueue, or a message was lost);
* running instances whose lease expired (their worker died): claim takes them again, attempt
  + 1, and the dead worker's late answer is refused for its stale token;
* webhook delivery attempts overdue by the grace period (a lost delayed message);

each at most once per grace period, then re-scores the session from what the sweep returned
(its next attention time), or removes it when nothing is outstanding. A pass therefore costs
O(sessions due), whatever the number of pending sessions (bench/sweeper.py), and a session
cooling down for an hour is not looked at for an hour. We do not wait for Dramatiq's own
dead-worker maintenance, which can take many minutes on an idle queue (DESIGN.md section 2).

An outbox entry due for longer than the grace period is usually not stranded but queued behind
a backlog: re-sending it doubled the messages (42-45 % duplicates). On a Redis broker every
run_instance message of one dispatch has one id (runners.instance_message_id: the instance
and when it became scheduled), so before
re-sending the sweeper asks the broker whether it still holds it (``QueuedMessages``): in the
queue or its delay queue, or fetched by a live worker; one held by a dead worker (heartbeat
older than the broker's timeout) is re-sent, under the same id (should Dramatiq's maintenance
also requeue the dead worker's copy, the later one finds no data and is skipped, or runs as a
duplicate that the claim refuses). What this relies on in Dramatiq's Redis broker (its
dispatch.lua, as of dramatiq 2.2.1; tests/test_task_path.py checks it on the installed
version): a message's data lives in the hash ``<ns>:<queue>.msgs`` under its id from enqueue
until its ack; a fetched message's id sits in the set ``<ns>:__acks__.<worker>.<queue>``;
workers' heartbeats are the zset ``<ns>:__heartbeats__``. Limits: a delayed message (a retry's
cooldown, a not-due claim) moves to the queue under a new random id when its time comes, so
such an entry may still be re-sent once per grace period under a backlog; RabbitMQ keeps the
time-based re-send (no cheap look-up of one queued message). Duplicates stay harmless either
way: the claim decides. A session whose stranded entries were all still queued is looked at
again after twice the time since their previous look (``Sweeper.backed_off``: at least the
grace period, at most a minute, sooner if a lease or another entry needs it), so a long backlog
costs a few visits per entry, not one per grace period (bench/pipeline.py counted up to 4
EVALSHA per HTTP task for them).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from contextlib import nullcontext
from typing import Any

from dramatiq.brokers.redis import RedisBroker
from dramatiq.common import dq_name
from dramatiq.middleware import Middleware
from redis.asyncio import Redis

from service import metrics
from service.engine.connection import pooled_exchange
from service.engine.engine import PREMARK_MS
from service.engine.keys import DELIVERY_KEY_NAMES, KEY_NAMES, delivery_keys, session_keys
from service.engine.models import Dispatch, SweepResult
from service.engine.scripts import raise_first_error
from service.settings import Settings
from service.worker.backoff import Backoff, one_line
from service.worker.runners import broker_client, instance_message_id
from service.worker.runtime import WorkerRuntime

log = logging.getLogger(__name__)

BATCH = 200
"""Sessions read from the index at a time."""
CONCURRENCY = 16
"""Sessions swept at once (each visit is a few round trips)."""
MAX_QUEUED_WATCH_MS = 60_000
"""Longest wait before the sweeper looks again at entries whose messages were all still queued
(the pre-mark's horizon: no promise gets looser than a crash right after a commit)."""
MIN_SETTLE_MS = 1_000
"""Least time allowed between a change's pre-mark and its script (see rescorePending.lua)."""


class Sweeper:
    def __init__(self, runtime: WorkerRuntime) -> None:
        self.runtime = runtime
        self.settings = runtime.settings
        self.lock = runtime.engine.client.lock(
            f"{self.settings.key_prefix}:sweeper",
            timeout=self.settings.sweep_interval * 3,
            blocking=False,
        )
        self.grace_ms = int(self.settings.sweep_grace * 1000)
        self.settle_ms = max(self.grace_ms, MIN_SETTLE_MS)
        self.hold_ms = min(runtime.engine.lease_ms, PREMARK_MS)
        self.retry_ms = max(self.grace_ms, int(self.settings.sweep_interval * 1000), 1000)
        self.swept = 0
        self.visited = 0
        self.queued = QueuedMessages()

    async def pass_once(self) -> int:
        """Sweeps every session due now (within the time budget); returns how many entries
        were re-sent."""
        engine, sent = self.runtime.engine, 0
        started = time.monotonic()
        pass_start = int(time.time() * 1000)  # sessions re-scored to now wait for the next pass
        limit = asyncio.Semaphore(CONCURRENCY)
        while True:
            read_at = int(time.time() * 1000)
            due = await engine.due_sessions(pass_start, BATCH)
            try:
                idle: set[str] | None = await self.idle_among([uid for uid, _ in due])
            except Exception as error:  # each visit looks for itself
                log.warning("sweeper: looking at %d sessions at once failed (%s)", len(due),
                            one_line(error))  # fmt: skip
                idle = None

            async def visit(
                uid: str, score: int, read_at: int = read_at, idle: set[str] | None = idle
            ) -> int:
                quiet = None if idle is None else uid in idle
                # an idle session's visit is one small script (the rescore): not limited, so
                # a batch's rescores share a few round trips (coalesce.py)
                async with nullcontext() if quiet else limit:
                    try:
                        return await self.visit(uid, score, read_at, idle=quiet)
                    except Exception as error:  # one broken session must not stall the rest
                        log.error("sweeper: session %s failed (%s: %s); next try in %d ms",
                                  uid, type(error).__name__, error, self.retry_ms)  # fmt: skip
                        await engine.defer_pending(uid, int(time.time() * 1000) + self.retry_ms)
                        return 0

            sent += sum(await asyncio.gather(*(visit(uid, score) for uid, score in due)))
            self.visited += len(due)
            if len(due) < BATCH or time.monotonic() - started > self.settings.sweep_interval:
                break
        self.swept += sent
        return sent

    async def visit(self, uid: str, score: int, read_at: int, *, idle: bool | None = None) -> int:
        """Sweep one session, hand over what it re-sends, re-score it; returns how many.
        ``idle``: whether it has nothing outstanding, if already looked (``idle_among``)."""
        engine, dispatcher = self.runtime.engine, self.runtime.dispatcher
        if idle is None:
            idle = await self.idle(uid)
        found = SweepResult() if idle else await engine.sweep(uid, self.grace_ms)
        stranded = await self.not_queued(uid, found.stranded)
        entries = [*stranded, *found.expired]
        if entries:
            log.warning("sweeper: re-dispatching %s of session %s",
                        ", ".join(e.name for e in entries), uid)  # fmt: skip
            await dispatcher.hand_over(uid, entries)
            metrics.SWEEPER_REDISPATCHED.labels("stranded").inc(len(stranded))
            metrics.SWEEPER_REDISPATCHED.labels("lease_expired").inc(len(found.expired))
        send = getattr(dispatcher.runners.get("webhooks"), "send", None)
        for delivery_id, chain in found.deliveries:
            if send is None:
                log.error("sweeper: delivery %s of %s is due but no webhooks runner is "
                          "registered", delivery_id, uid)  # fmt: skip
                break
            log.warning("sweeper: re-sending webhook delivery %s of session %s", delivery_id, uid)
            await send(uid, delivery_id, chain=chain)
        next_ms = found.next
        if found.stranded and not entries and not found.deliveries:
            next_ms = self.backed_off(found)
        await engine.rescore_pending(uid, score, next_ms, read_at, settle_ms=self.settle_ms,
                                     hold_ms=self.hold_ms)  # fmt: skip
        return len(entries) + len(found.deliveries)

    async def idle(self, uid: str) -> bool:
        """Whether the session has nothing outstanding: no outbox entry, no lease, no webhook
        attempt due (none of the three sorted sets exists; one EXISTS, atomic, in the session's
        slot). sweepSession would find nothing then, write nothing, and answer no ``next``, so
        the visit goes straight to the rescore. Most visits are of such sessions: a fire marks
        its session for due + grace, and the task has usually finished by then (bench/
        pipeline.py: a sweepSession per task, an EVALSHA with the library's preamble, where one
        EXISTS tells). Read like a sweep: a change after it is kept watched by its marks."""
        return not await self.runtime.engine.client.exists(*self._watched(uid))

    async def idle_among(self, uids: list[str]) -> set[str]:
        """``idle`` for many sessions: one round trip of EXISTS on a standalone Redis."""
        client = self.runtime.engine.client
        if not isinstance(client, Redis):  # a cluster: each looks on its own node
            looks = await asyncio.gather(*(self.idle(uid) for uid in uids))
            return {uid for uid, quiet in zip(uids, looks, strict=True) if quiet}
        found = await asked(client, [("EXISTS", *self._watched(uid)) for uid in uids])
        return {uid for uid, count in zip(uids, found, strict=True) if not count}

    def _watched(self, uid: str) -> tuple[str, str, str]:
        """The outbox, the leases and the due webhook attempts of ``uid``."""
        keys = session_keys(uid, self.runtime.engine.prefix)
        due = delivery_keys(uid, self.runtime.engine.prefix)[DELIVERY_KEY_NAMES.index("wh:due")]
        return keys[KEY_NAMES.index("outbox")], keys[KEY_NAMES.index("leases")], due

    def backed_off(self, found: SweepResult) -> int | None:
        """When the next visit is due if every stranded entry's message is still queued (a
        backlog, nothing lost): twice the time since their previous stamp, at least the grace
        period, at most MAX_QUEUED_WATCH_MS, unless something else needs the session sooner.
        A backlog of D seconds then costs about log2(D / grace) visits per entry instead of
        D / grace; a message lost while queued is re-sent within one such interval."""
        assert found.next is not None
        now = int(time.time() * 1000)
        since = now - max(entry.due for entry in found.stranded)
        watch = now + min(MAX_QUEUED_WATCH_MS, max(self.grace_ms, 2 * since))
        return watch if found.later is None else min(watch, found.later)

    async def not_queued(self, uid: str, entries: list[Dispatch]) -> list[Dispatch]:
        """The stranded entries to re-send: those of the Dramatiq runner whose message the
        broker still holds are only late (a backlog), not lost."""
        sent = [entry for entry in entries if entry.runner == "dramatiq" and entry.scheduled]
        if not sent:
            return entries
        try:
            held = await self.queued.held(uid, sent)
        except Exception as error:  # the broker is away: re-send, as without the check
            log.warning("sweeper: cannot ask the broker (%s); re-sending", one_line(error))
            return entries
        return [entry for entry in entries if entry.name not in held]

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


class QueuedMessages:
    """Asks the Redis broker which instances still have a run_instance message in it (see
    the module's docs for the broker internals this reads). Other brokers: none known."""

    def __init__(self) -> None:
        self._client: Redis | None = None

    def _client_for(self, broker: RedisBroker) -> Redis:
        if self._client is None:
            self._client = broker_client(broker)
        return self._client

    async def held(self, uid: str, entries: list[Dispatch]) -> set[str]:
        """The names of the entries whose message is queued, delayed or fetched by a live
        worker (the message of a dispatch is known by its instance and the time it became
        scheduled)."""
        from service.worker.actors import run_instance

        broker = run_instance.broker
        if not isinstance(broker, RedisBroker):
            return set()
        client, space = self._client_for(broker), broker.namespace
        queues = (run_instance.queue_name, dq_name(run_instance.queue_name))
        names = [entry.name for entry in entries]
        ids = {e.name: instance_message_id(uid, e.name, e.scheduled) for e in entries}
        dead_since = int(time.time() * 1000) - broker.heartbeat_timeout
        commands: list[tuple[Any, ...]] = [
            ("HEXISTS", f"{space}:{queue}.msgs", ids[name]) for queue in queues for name in names
        ]
        commands.append(("ZRANGEBYSCORE", f"{space}:__heartbeats__", 0, dead_since))
        *found, dead = await asked(client, commands)
        held = {name for i, name in enumerate(names * len(queues)) if found[i]}
        if not held or not dead:
            return held
        workers = [w.decode() if isinstance(w, bytes) else str(w) for w in dead]
        checks = [(name, worker, queue) for name in held for worker in workers for queue in queues]
        hits = await asked(client, [("SISMEMBER", f"{space}:__acks__.{worker}.{queue}", ids[name])
                                    for name, worker, queue in checks])  # fmt: skip
        in_dead_hands = {name for (name, _, _), hit in zip(checks, hits, strict=True) if hit}
        return held - in_dead_hands

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()


async def sweep_until(runtime: WorkerRuntime, stop: threading.Event) -> None:
    """The sweeper on the caller's event loop and runtime (the asyncio consumer's), until
    ``stop`` is set or the task is cancelled; the lock is given back either way, so another
    worker's sweeper takes over at once."""
    sweeper = Sweeper(runtime)
    try:
        await sweeper.run(stop)
    finally:
        try:
            if await sweeper.lock.owned():
                await sweeper.lock.release()
        except Exception as error:  # it lapses by itself
            log.warning("sweeper lock not released: %s", one_line(error))
        await sweeper.queued.aclose()


async def asked(client: Redis, commands: list[tuple[Any, ...]]) -> list[Any]:
    """Read-only commands in one round trip (connection.exchange: hiredis packing, no
    redis-py pipeline objects, which were most of a backlogged sweep's CPU); the first error
    reply raised."""
    if not commands:
        return []
    return raise_first_error(await pooled_exchange(client, commands))


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
            sweeper = Sweeper(runtime)
            try:
                await sweeper.run(self.stop)
            finally:
                await sweeper.queued.aclose()
                await runtime.aclose()

        backoff = Backoff(Settings().sweep_interval)
        while not self.stop.is_set():
            try:
                asyncio.run(main())
            except Exception as error:
                log.warning("sweeper failed: %s; restarting it in %.1f s",
                            one_line(error), backoff.current)  # fmt: skip
                self.stop.wait(backoff.next_delay())
