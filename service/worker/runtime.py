"""What a worker process needs to run instances, built once on the worker's event loop.

Dramatiq's AsyncIO middleware runs async actors on one event loop thread per process; the
engine's connection pool and the HTTP client belong to that loop, so they are created lazily
from inside it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from typing import Any

import orjson
from redis.asyncio import Redis

from service import metrics, tracing
from service.engine import Claim, ConflictError, Engine, InvalidError, Outcome
from service.factory import build_engine, build_manager
from service.logs import bind_contextvars
from service.managers import Manager
from service.outbound import OutboundPolicy
from service.outbound_http import OutboundClient
from service.settings import Settings
from service.signing import Signer, deployment_secret
from service.webhooks.delivery import Deliverer, parse_schedule
from service.webhooks.store import DeliveryStore
from service.worker.coalesce import CoalescingScriptRunner
from service.worker.dispatch import Dispatcher, load_runners
from service.worker.http_task import HttpTaskRunner
from service.worker.lease import LeaseKeeper
from service.worker.outcome import TaskOutcome
from service.worker.python_tasks import PythonTaskRegistry, TaskContext
from service.worker.runners import ActorSender
from service.worker.slots import TaskSlots

log = logging.getLogger(__name__)


def quiet_http_client_log() -> None:
    """httpx logs every request at INFO ("HTTP Request: POST ..."): a second line per HTTP task
    beside the worker's own "instance finished", and a tenth of an HTTP task's worker CPU in
    bench/pipeline.py. Raised to WARNING unless someone set the httpx logger's level."""
    client_log = logging.getLogger("httpx")
    if client_log.level == logging.NOTSET:
        client_log.setLevel(logging.WARNING)


class WorkerRuntime:
    def __init__(self, settings: Settings) -> None:
        assert settings.redis_url
        quiet_http_client_log()
        self.settings = settings
        self.manager: Manager = build_manager(settings)
        self.engine: Engine = build_engine(settings, settings.redis_url, self.manager)
        if isinstance(self.engine.client, Redis):  # concurrent actors share round trips
            self.engine.scripts = CoalescingScriptRunner(self.engine.client)
        self.dispatcher = Dispatcher(self.engine, load_runners(), settings)
        secret = deployment_secret(settings)
        self.http = OutboundClient()  # no cookies kept, plain asyncio (outbound_http.py)
        tracing.instrument_httpx(self.http)  # sends traceparent on to HTTP tasks and webhooks
        self.http_tasks = HttpTaskRunner(
            self.http, OutboundPolicy(settings.outbound_allow), Signer(secret),
            connect_timeout=settings.http_connect_timeout,
            read_timeout=settings.http_read_timeout,
            max_timeout=settings.http_max_timeout,
            max_response_bytes=settings.http_max_response_bytes,
        )  # fmt: skip
        self.deliverer = Deliverer(
            DeliveryStore(self.engine), self.http, OutboundPolicy(settings.outbound_allow),
            Signer(secret), parse_schedule(settings.webhook_retry_schedule),
            min(settings.webhook_timeout, settings.http_max_timeout),
        )  # fmt: skip
        modules = [m.strip() for m in (settings.task_modules or "").split(",") if m.strip()]
        self.python_tasks = PythonTaskRegistry(modules)
        self.sender = ActorSender()  # the actors' own re-sends (not due yet, retry later)
        # Set by a consumer that holds more runs than it lets run tasks at once (the asyncio
        # consumer): a claim and its task's run, or a webhook attempt, hold a slot.
        self.task_slots: TaskSlots | None = None

    async def after(self, uid: str, outcome: Outcome) -> None:
        """Hand what the change scheduled to its runners, then call the manager's hooks."""
        await self.dispatcher.dispatch(uid, outcome)
        await self.manager.after_transition(uid, outcome)

    async def fire(self, uid: str, trigger: str, kwargs: dict[str, Any] | None) -> Outcome:
        outcome = await self.engine.fire(uid, trigger, kwargs)
        await self.after(uid, outcome)
        return outcome

    async def run_task(
        self, uid: str, name: str, claim: Claim, cancelled: threading.Event
    ) -> TaskOutcome:
        """Runs the task; ``cancelled`` is set when the run must stop (its lease is lost)."""
        assert claim.task is not None
        if claim.task.run.startswith(("http://", "https://")):
            return await self.http_tasks.run(uid, name, claim)
        context = TaskContext(
            uid, name, claim.attempt or 1, claim.kwargs or {},
            lambda trigger, kwargs: self.fire(uid, trigger, kwargs),
            asyncio.get_running_loop(), cancelled=cancelled,
        )  # fmt: skip
        return await self.python_tasks.run(claim.task.run, context)

    async def _run_guarded(
        self, uid: str, name: str, claim: Claim, cancelled: threading.Event
    ) -> TaskOutcome:
        try:
            return await self.run_task(uid, name, claim, cancelled)
        except Exception as error:  # a fault of ours, not the task's: still an end
            log.exception("%s %s: running the task failed", uid, name)
            return TaskOutcome.failure("triggers.WorkerError",
                                       f"{type(error).__name__}: {error}")  # fmt: skip

    async def run_leased(
        self, uid: str, name: str, claim: Claim, sent_at: float
    ) -> TaskOutcome | None:
        """Runs the task while its lease is kept; None when the lease was lost: the run is then
        stopped (an HTTP request is cancelled, which closes its connection; a Python task's
        context turns ``cancelled`` and refuses to fire) and its outcome must not be reported,
        since another worker may be running the instance again."""
        assert claim.token is not None
        keeper = LeaseKeeper(self.engine, uid, name, claim.token, sent_at)
        cancelled = threading.Event()
        this = asyncio.current_task()
        assert this is not None
        requests = this.cancelling()  # cancellations asked of this task before the run

        def stop_run() -> None:  # the lease is lost: the run must stop
            cancelled.set()
            this.cancel()  # the run is awaited here, not a task of its own: two loop
            # iterations less per run; the keeper never calls this once stopped below

        keeper.watch(stop_run)
        try:
            result = await self._run_guarded(uid, name, claim, cancelled)
        except asyncio.CancelledError:
            # ours (the lease is lost) is taken back; one from outside (too) goes on
            if not keeper.lost.is_set() or this.uncancel() > requests:
                cancelled.set()  # a def task's thread goes on: its context turns cancelled
                raise
        finally:
            keeper.stop()
        if not keeper.lost.is_set():
            return result
        while this.cancelling() > requests:  # ours, swallowed by the task's own code
            this.uncancel()
        log.warning("%s %s: lease lost (%s); the run was stopped and reports nothing",
                    uid, name, keeper.reason)  # fmt: skip
        return None

    async def run_measured(
        self, uid: str, name: str, claim: Claim, sent_at: float
    ) -> TaskOutcome | None:
        """``run_leased`` with its metrics: the wait since the instance was due, the run's
        duration by task kind, and the leases this process holds meanwhile."""
        waited = waited_since_due(claim)
        if waited is not None:
            metrics.SCHEDULE_TO_START.observe(waited)
        metrics.LEASES_ACTIVE.inc()
        started = time.perf_counter()
        try:
            return await self.run_leased(uid, name, claim, sent_at)
        finally:
            metrics.LEASES_ACTIVE.dec()
            metrics.TASK_DURATION.labels(kind_of(claim)).observe(time.perf_counter() - started)

    async def record(self, uid: str, name: str, token: str, result: TaskOutcome) -> Outcome:
        """The transition that ends the run (one script each, with its cascade)."""
        engine = self.engine
        if result.kind == "finished":  # its record is never read here: not decoded
            return await engine.complete(uid, name, token, result.result,
                                         log_level=result.log_level, want_record=False)  # fmt: skip
        if result.kind == "retry":
            return await engine.retry(
                uid, name, token, cooldown=result.cooldown, kwargs=result.kwargs,
                metadata=result.metadata, log_level=result.log_level,
            )  # fmt: skip
        if result.kind == "skip":
            return await engine.set_status(uid, name, "skipped", metadata=result.metadata,
                                           token=token)  # fmt: skip
        return await engine.fail(
            uid, name, token, result.exception_type, result.exception_info,
            result.exception_context, log_level=result.log_level,
        )  # fmt: skip

    async def execute(self, uid: str, name: str) -> int | None:
        """Claim, run, record. Returns a delay (ms) when the instance is not due yet.

        The claim and the run hold one of ``task_slots`` (when set); the record does not, so
        one run's outcome goes to Redis while the next run's claim and task take its slot.
        NotStarted (slots.py) when the worker stopped while this run waited for a slot."""
        async with self._slot():
            ran = await self._claim_and_run(uid, name)
        if not isinstance(ran, tuple):
            return ran
        claim, result = ran
        assert claim.token is not None
        try:
            outcome = await self.record(uid, name, claim.token, result)
        except ConflictError as refused:
            log.warning("%s %s: result refused (%s)", uid, name, refused)
            return None
        except InvalidError as invalid:  # e.g. a result or context that is not JSON
            outcome = await self.engine.fail(
                uid, name, claim.token, "triggers.InvalidTaskResult", invalid.message
            )
        ended = ended_as(result, outcome)
        metrics.count_instance(kind_of(claim), ended)
        log.info("instance %s", ended, extra={"kwargs_bytes": len(orjson.dumps(claim.kwargs))})
        await self.after(uid, outcome)
        if outcome.retried and outcome.record is not None:
            await self.manager.after_replay(uid, outcome.record)
        return None

    async def _claim_and_run(self, uid: str, name: str) -> tuple[Claim, TaskOutcome] | int | None:
        """The claim and the task's run: the claim and what the run ended with; the delay (ms)
        of an instance not due yet; None when there is nothing to record (not claimable, or
        the lease was lost)."""
        sent_at = time.monotonic()  # the lease runs from no earlier than this
        claim = await self.engine.claim(uid, name, with_instance=False)  # not read here
        if claim.state == "not_due":
            return claim.wait
        if claim.state != "claimed":
            log.info("%s %s: nothing to do (%s %s)", uid, name, claim.state, claim.status or "")
            return None
        bind_contextvars(attempt=claim.attempt or 1)
        if claim.task is None:
            unknown = f"task of {name} is no longer configured"
            return claim, TaskOutcome.failure("triggers.TaskNotConfigured", unknown)
        result = await self.run_measured(uid, name, claim, sent_at)
        return None if result is None else (claim, result)

    async def deliver(self, uid: str, delivery_id: str, chain: int = 0) -> float | None:
        """One attempt of a webhook delivery (if its ``chain`` has one due); the delay before
        the next one, if any."""
        async with self._slot():
            return await self.deliverer.attempt(uid, delivery_id, chain)

    def _slot(self) -> contextlib.AbstractAsyncContextManager[None]:
        if self.task_slots is None:
            return contextlib.nullcontext()
        return self.task_slots.hold()

    async def aclose(self) -> None:
        await self.sender.aclose()
        await self.http.aclose()
        await self.engine.aclose()


def kind_of(claim: Claim) -> metrics.TaskKind:
    task = claim.task
    return metrics.task_kind(task.run if task else None, task.using if task else None)


def ended_as(result: TaskOutcome, outcome: Outcome) -> metrics.InstanceOutcome:
    """How the run's instance ended: a retry that the engine turned into a failure (its budget
    spent) counts as failed."""
    if result.kind == "finished":
        return "finished"
    if result.kind == "skip":
        return "skipped"
    if result.kind == "retry" and outcome.retried:
        return "retried"
    return "failed"


def waited_since_due(claim: Claim) -> float | None:
    """Seconds from the instance being scheduled to now; None for a retry's or replay's clone
    (``scheduledMs`` None), which may wait out a cooldown on purpose and would blur the
    figure."""
    if claim.scheduledMs is None:
        return None
    return max(0.0, time.time() - claim.scheduledMs / 1000)
