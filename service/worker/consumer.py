"""The asyncio worker for the Redis broker: messages fetched and runs made on one event loop.

Dramatiq's worker hands every message through threads: a consumer thread per queue fetches it,
a worker thread takes it from a queue, the AsyncIO middleware carries our coroutine over to its
event loop thread and the thread waits for it, then the consumer thread acks it. Our runs are
coroutines already (claim, run, complete on one loop: service/worker/runtime.py), so those
hand-offs were most of a no-op task's worker CPU (py-spy of bench/pipeline.py: the thread bridge
11 %, acks 7 %, consumer 4 %, hand-offs 5 %). Here one loop fetches a batch of messages
(dispatch.lua's ``fetch``, service/worker/redis_queue.py), runs up to twice ``threads`` of them
at once as tasks (at most ``threads`` claim and run their task, service/worker/slots.py; the
others record their outcome or wait for a slot: ``RUNS_PER_THREAD``), and acks the ones that
ended during one loop iteration in one round trip.
``def`` Python tasks run in a pool of ``threads`` threads (task_threads.py).

Messages stay Dramatiq's (same queues, same script, same commands), so this worker and a
Dramatiq worker can share a queue, and crash recovery is the broker's and the engine's as
before: a message fetched by a process that dies stays in its ack set until another process's
maintenance (once the dead one's heartbeat is older than the broker's heartbeat timeout) puts
it back, and the engine's lease, outbox and sweeper re-dispatch the instance much sooner.

A fetch whose answer is lost (Redis ran it, then the connection failed) would leave its
messages in this worker's ack set for as long as the worker lives (Dramatiq's consumer does,
and the sweeper leaves messages a live worker holds alone): the next fetch first requeues every
id of the set that this consumer does not hold.

An idle consumer does not sleep its poll: it waits in BLPOP for a wake-up that our producers
push beside the queue with every enqueue (service/worker/wakeup.py), so a message sent to an
idle worker runs at once; it still fetches at least once per poll.

What the Dramatiq middleware did is done here: the worker heartbeat (HeartbeatMiddleware,
reused as is), the sweeper (service/worker/sweeper.py, on this loop and runtime), the message's
trace context (tracing.received), a clean log context per message (each run is a task with a
fresh copy of the loop's context, so ``bind_contextvars`` of one run never shows in another).
A handler's exception is logged and the message dead-lettered (``nack``), as Dramatiq does for
an actor with ``max_retries=0``. Dramatiq's middleware hooks are not emitted: the broker's
other middleware (age and time limits, callbacks, pipelines, retries) has nothing to do for our
actors (no limits, no callbacks, no retries).

Graceful stop: fetching stops, messages fetched but not started (and delayed ones held until
their eta) are requeued at once, as are runs still waiting for a slot once one frees (they
claim nothing after the stop, slots.py), runs in flight get the stop timeout to end (then they are
cancelled and requeued; their leases lapse and the sweeper re-dispatches), acks are flushed.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import heapq
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from dramatiq.brokers.redis import RedisBroker
from dramatiq.common import compute_backoff, dq_name
from dramatiq.message import Message

from service import tracing
from service.settings import Settings
from service.worker.backoff import Backoff, one_line
from service.worker.redis_queue import BrokerQueues
from service.worker.slots import NotStarted, TaskSlots
from service.worker.task_threads import TaskThreads
from service.worker.wakeup import Waiter, waiter_client

log = logging.getLogger(__name__)

Handler = Callable[..., Awaitable[Any]]

PREFETCH_PER_RUN = 2
"""Messages held per run slot (running and ready to run). Unlike Dramatiq's consumer thread,
which sleeps its idle backoff while the window is full, the fetch here waits for room and
fetches as soon as a quarter of the window is free, so twice the runs keep work ready."""
FETCH_SHARE = 4
"""A fetch waits until at least 1/FETCH_SHARE of the window is free (a batch, not a message
per fetch)."""
BEAT_SECONDS = 10.0
"""A window full for this long still sends a fetch of nothing: every dispatch.lua command
refreshes this worker's broker heartbeat, and runs that hold the window longer than the
broker's heartbeat timeout (60 s) must not make it look dead."""
SETTLE_SECONDS = 10.0
"""At a stop, the longest wait for the last acks (Redis away: the messages stay fetched, and
the broker's maintenance puts them back once this worker's heartbeat is old; their runs ended,
so the claims refuse to run them again)."""
RUNS_PER_THREAD = 2
"""Runs held per worker thread. A run's claim and task hold one of ``threads`` slots
(WorkerRuntime.task_slots), its record (complete and cascade) does not: the record of one run
overlaps the claim and task of the next, so the tasks running at once stay ``threads`` while a
slot no longer waits out a round trip to Redis per run (bench/pipeline.py)."""
DELAY_PREFETCH_PER_RUN = 1000
"""Delayed messages held per run slot, as Dramatiq's worker holds (``delay_prefetch``)."""


async def wait_set(event: asyncio.Event, seconds: float) -> bool:
    """Wait for ``event`` up to ``seconds``; whether it was set."""
    if event.is_set():
        return True
    try:
        async with asyncio.timeout(seconds):
            await event.wait()
    except TimeoutError:
        return event.is_set()
    return True


class AsyncConsumer:
    """Consumes the broker's ``queue`` and its delay queue on the running event loop."""

    def __init__(
        self,
        broker: RedisBroker,
        queues: BrokerQueues,
        handlers: Mapping[str, Handler],
        queue: str,
        runs: int,
        poll_ms: int,
        waiter: Waiter | None = None,
    ) -> None:
        self.broker = broker
        self.waiter = waiter
        self.queues = queues
        self.handlers = handlers
        self.queue = queue
        self.delay_queue = dq_name(queue)
        self.runs = runs
        self.poll_ms = poll_ms
        self.prefetch = PREFETCH_PER_RUN * runs
        self.least = max(1, self.prefetch // FETCH_SHARE)
        self.delay_prefetch = min(DELAY_PREFETCH_PER_RUN * runs, 65535)
        self.ready: deque[tuple[str, Message[Any]]] = deque()
        self.delayed: list[tuple[float, int, str, Message[Any]]] = []  # (eta, n, queue, msg)
        self._order = itertools.count()
        self.running: dict[asyncio.Task[None], tuple[str, Message[Any]]] = {}
        self.acks: list[tuple[str, str]] = []
        self.nacks: list[tuple[str, str]] = []
        self.stopping = asyncio.Event()
        self.stop_timeout = 30.0
        self.room = asyncio.Event()
        self._flush: asyncio.Task[None] | None = None
        self._settling: set[str] = set()  # ids of the acks and nacks in flight
        self._unsure: set[str] = set()  # queues whose latest fetch answer was lost
        self._context = contextvars.copy_context()

    @property
    def held(self) -> int:
        return len(self.ready) + len(self.running)

    # -- fetching ------------------------------------------------------------------------------

    async def consume(self) -> None:
        """Fetch from the queue until stopped: a batch whenever the window has room for one;
        when the queue is empty, wait for a producer's wake-up up to the poll (wakeup.py; no
        waiter: the idle backoff of Dramatiq's consumer, up to the poll)."""
        misses = 0
        trouble = Backoff(1.0)
        while not self.stopping.is_set():
            room = self.prefetch - self.held
            if room < self.least:
                self.room.clear()
                if not await wait_set(self.room, BEAT_SECONDS):
                    room = 0  # only a heartbeat
                else:
                    continue
            try:
                await self._recover(self.queue)
                messages = await self.queues.fetch(self.queue, room)
            except Exception as error:
                self._unsure.add(self.queue)
                log.warning("fetching from %s failed: %s", self.queue, one_line(error))
                await wait_set(self.stopping, trouble.next_delay())
                continue
            trouble.reset()
            for message in messages:
                self.take(self.queue, message)
            if messages:
                misses = 0
            elif room and self.waiter is not None:
                await self._wait_for_wakeup(self.waiter)
            elif room:
                misses, backoff_ms = compute_backoff(misses, max_backoff=self.poll_ms)
                await wait_set(self.stopping, backoff_ms / 1000)

    async def _wait_for_wakeup(self, waiter: Waiter) -> None:
        """An empty queue: wait for a producer's wake-up, at most the poll (wakeup.py), or the
        stop."""
        woken = asyncio.ensure_future(waiter.wait(self.poll_ms / 1000))
        stopped = asyncio.ensure_future(self.stopping.wait())
        await asyncio.wait({woken, stopped}, return_when=asyncio.FIRST_COMPLETED)
        for waiting in (woken, stopped):
            waiting.cancel()

    async def consume_delayed(self) -> None:
        """Fetch delayed messages and hold them until their eta, then move them to the queue
        (as Dramatiq's consumer of a delay queue does)."""
        misses = 0
        trouble = Backoff(1.0)
        while not self.stopping.is_set():
            messages: list[Message[Any]] = []
            room = self.delay_prefetch - len(self.delayed)
            if room > 0:
                try:
                    await self._recover(self.delay_queue)
                    messages = await self.queues.fetch(self.delay_queue, room)
                    trouble.reset()
                except Exception as error:
                    self._unsure.add(self.delay_queue)
                    log.warning("fetching from %s failed: %s", self.delay_queue, one_line(error))
                    await wait_set(self.stopping, trouble.next_delay())
                    continue
            for message in messages:
                self.take(self.delay_queue, message)
            await self.release_due()
            if messages:
                misses = 0
                continue
            misses, backoff_ms = compute_backoff(misses, max_backoff=self.poll_ms)
            pause = backoff_ms / 1000
            if self.delayed:
                pause = min(pause, max(0.0, self.delayed[0][0] / 1000 - time.time()))
            await wait_set(self.stopping, pause)

    async def _recover(self, queue: str) -> None:
        """After a fetch whose answer was lost (the connection failed once Redis had run it),
        the messages it took sit in this worker's ack set with nobody to run them, and the
        sweeper leaves them alone (a live worker holds them): they are put back on the queue.
        Every id the set holds that this consumer does not know of is such a message."""
        if queue not in self._unsure:
            return
        known = {m.options["redis_message_id"] for q, m in self.ready if q == queue}
        known |= {m.options["redis_message_id"] for q, m in self.running.values() if q == queue}
        known |= {m.options["redis_message_id"] for _, _, q, m in self.delayed if q == queue}
        known |= {mid for q, mid in self.acks + self.nacks if q == queue} | self._settling
        lost = sorted((await self.queues.fetched(queue)) - known)
        if lost:
            log.warning("%d messages fetched from %s with a lost answer: requeued", len(lost),
                        queue)  # fmt: skip
            await self.queues.requeue(queue, lost)
        self._unsure.discard(queue)

    def take(self, queue: str, message: Message[Any]) -> None:
        """A fetched message: held until its eta if it has one, else ready to run. One without
        the broker's id (not sent by a Dramatiq producer) can be neither acked nor requeued:
        it is logged and left alone, as Dramatiq's consumer could not ack it either."""
        if "redis_message_id" not in message.options:
            log.error("message %s on %s has no redis_message_id: not run", message.message_id,
                      queue)  # fmt: skip
            return
        eta = message.options.get("eta")
        if eta is None:
            self.ready.append((queue, message))
            self._start_ready()
            return
        if not isinstance(eta, int | float):
            log.warning("message %s: invalid eta %r, taken as now", message.message_id, eta)
            eta = time.time() * 1000
        heapq.heappush(self.delayed, (eta, next(self._order), queue, message))

    async def release_due(self) -> None:
        """Delayed messages whose eta passed go to their queue (and are acked here)."""
        now = time.time() * 1000
        due: dict[str, list[Message[Any]]] = {}
        while self.delayed and self.delayed[0][0] <= now:
            _, _, queue, message = heapq.heappop(self.delayed)
            due.setdefault(queue, []).append(message)
        for queue, messages in due.items():
            try:
                await self.queues.release_due(queue, messages)
            except Exception as error:  # kept, tried again on the next turn
                log.warning("moving %d due messages from %s failed: %s", len(messages), queue,
                            one_line(error))  # fmt: skip
                for message in messages:
                    heapq.heappush(self.delayed, (now, next(self._order), queue, message))

    # -- running -------------------------------------------------------------------------------

    def _start_ready(self) -> None:
        while self.ready and len(self.running) < self.runs and not self.stopping.is_set():
            queue, message = self.ready.popleft()
            task = asyncio.get_running_loop().create_task(
                self._run(message), context=self._context.copy()
            )
            self.running[task] = (queue, message)
            task.add_done_callback(self._ended)

    async def _run(self, message: Message[Any]) -> None:
        """The message's handler; its exception is logged and fails the message (nack)."""
        handler = self.handlers.get(message.actor_name)
        if handler is None:
            raise LookupError(f"no actor {message.actor_name!r} in this worker")
        tracing.received(message.options)
        await handler(*message.args, **message.kwargs)

    def _ended(self, task: asyncio.Task[None]) -> None:
        queue, message = self.running.pop(task)
        message_id = message.options["redis_message_id"]
        if task.cancelled() and self.stopping.is_set():  # past the stop timeout: requeued
            self.ready.appendleft((queue, message))
        elif not task.cancelled() and isinstance(task.exception(), NotStarted):  # stopping
            self.ready.appendleft((queue, message))  # before its claim: requeued
        elif task.cancelled():  # not by us: a failure like any other
            log.error("message %s (%s) was cancelled; moved to the dead-letter queue",
                      message.message_id, message.actor_name)  # fmt: skip
            self.nacks.append((queue, message_id))
        elif (error := task.exception()) is not None:
            log.error("message %s (%s) failed; moved to the dead-letter queue",
                      message.message_id, message.actor_name, exc_info=error)  # fmt: skip
            self.nacks.append((queue, message_id))
        else:
            self.acks.append((queue, message_id))
        self._settle_soon()
        self._start_ready()
        if self.prefetch - self.held >= self.least:
            self.room.set()

    # -- acknowledging -------------------------------------------------------------------------

    def _settle_soon(self) -> None:
        """Acks go out once per loop iteration (the runs that ended meanwhile share it), one
        batch at a time: those that end during a batch's round trip make the next one."""
        if self._flush is None or self._flush.done():
            self._flush = asyncio.get_running_loop().create_task(self._settle())

    async def _settle(self) -> None:
        trouble = Backoff(1.0)
        await asyncio.sleep(0)  # the runs ending in this iteration join the batch
        while self.acks or self.nacks:
            acks, nacks = self.acks, self.nacks
            self.acks, self.nacks = [], []
            self._settling = {mid for _, mid in acks + nacks}
            try:
                await self.queues.settle(acks, nacks)
                trouble.reset()
            except Exception as error:  # acks are idempotent: the whole batch again later
                self.acks[:0], self.nacks[:0] = acks, nacks
                log.warning("acknowledging %d messages failed: %s; retrying",
                            len(acks) + len(nacks), one_line(error))  # fmt: skip
                await asyncio.sleep(trouble.next_delay())
            finally:
                self._settling = set()

    # -- stopping ------------------------------------------------------------------------------

    async def run(self) -> None:
        """Consume until ``stop``; then fetching ends, held messages go back, the runs in
        flight get the stop timeout, acks go out."""
        fetchers = [
            asyncio.create_task(self.consume(), name="consume"),
            asyncio.create_task(self.consume_delayed(), name="consume delayed"),
        ]
        try:
            await self.stopping.wait()
        finally:
            self.stopping.set()
            self.room.set()
            await asyncio.wait(fetchers)
            await self.finish(self.stop_timeout)

    def stop(self, timeout: float) -> None:
        """Ask ``run`` to stop, giving runs in flight ``timeout`` seconds (on the loop)."""
        self.stop_timeout = timeout
        self.stopping.set()
        self.room.set()

    async def finish(self, timeout: float) -> None:
        """Held messages go back, runs get ``timeout`` seconds, acks go out (once the fetch
        loops have returned)."""
        await self._requeue_held()
        if self.running:
            log.info("waiting up to %.0f s for %d runs", timeout, len(self.running))
            await asyncio.wait(list(self.running), timeout=timeout)
        if self.running:
            log.warning("%d runs did not end within the stop timeout: cancelled, requeued",
                        len(self.running))  # fmt: skip
            tasks = list(self.running)
            for task in tasks:
                task.cancel()
            await asyncio.wait(tasks)
        await self._requeue_held()  # and the runs that did not start (slots.NotStarted)
        with contextlib.suppress(TimeoutError):  # Redis away: the broker's maintenance
            async with asyncio.timeout(SETTLE_SECONDS):  # requeues them; claims refuse reruns
                if self._flush is not None:
                    await self._flush
                if self.acks or self.nacks:
                    await self._settle()

    async def _requeue_held(self) -> None:
        by_queue: dict[str, list[str]] = {}
        for queue, message in self.ready:
            by_queue.setdefault(queue, []).append(message.options["redis_message_id"])
        for _, _, queue, message in self.delayed:
            by_queue.setdefault(queue, []).append(message.options["redis_message_id"])
        self.ready.clear()
        self.delayed.clear()
        for queue, message_ids in by_queue.items():
            try:
                await self.queues.requeue(queue, message_ids)
            except Exception as error:  # the broker's maintenance requeues them later
                log.warning("requeueing %d messages on %s failed: %s", len(message_ids), queue,
                            one_line(error))  # fmt: skip


class AsyncWorker:
    """``AsyncConsumer`` on an event loop thread of its own, with the worker's heartbeat and
    sweeper: started and stopped like Dramatiq's ``Worker`` (``start()``, ``stop(timeout)``)."""

    def __init__(self, settings: Settings, threads: int) -> None:
        self.settings = settings
        self.worker_threads = threads
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._main, name="triggers-worker", daemon=True)
        self.consumer: AsyncConsumer | None = None
        self.task_threads = TaskThreads(threads)  # def Python tasks (task_threads.py)
        self.task_slots = TaskSlots(threads)  # claims and runs at once (slots.py)
        self._stop_timeout = 30.0
        self._stopping = asyncio.Event()
        self._started = threading.Event()

    def start(self) -> None:
        self.thread.start()
        self._started.wait()

    def stop(self, timeout: int = 30_000) -> None:
        """Stop gracefully: runs in flight get ``timeout`` ms (then requeueing and acks)."""
        if self.thread.is_alive():
            self.loop.call_soon_threadsafe(self._stop, timeout / 1000)
        self.thread.join(timeout / 1000 + 15)
        log.info("Worker has been shut down.")  # Dramatiq's Worker's words: logs read alike

    def _stop(self, timeout: float) -> None:
        self._stop_timeout = timeout
        self._stopping.set()
        self.task_slots.close()  # runs waiting for a slot claim nothing: requeued
        if self.consumer is not None:
            self.consumer.stop(timeout)

    def _main(self) -> None:
        # blocking helpers (DNS look-ups, off-loop decoding); def tasks run in task_threads
        self.loop.set_default_executor(
            ThreadPoolExecutor(self.worker_threads, thread_name_prefix="triggers-io")
        )
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self._serve())
        except Exception:
            log.exception("the worker's event loop failed")
        finally:
            self._started.set()
            self.loop.run_until_complete(self.loop.shutdown_default_executor())
            self.task_threads.shutdown()
            self.loop.close()

    async def _ready(self, broker: RedisBroker, client: Any) -> tuple[Any, BrokerQueues] | None:
        """The runtime and the queues, once Redis answers (both read from it when made: the
        signing secret, the broker's Lua stack size); None if stopped meanwhile. Until then
        nothing is fetched: the messages wait in the queue (Dramatiq's worker took them and
        dead-lettered each one whose run could not start)."""
        from service.worker import actors

        backoff = Backoff(1.0)
        while not self._stopping.is_set():
            try:
                return actors.runtime(), BrokerQueues(broker, client)
            except Exception as error:
                log.warning("worker failed to start (its runs and sweeper need Redis): %s; "
                            "next try in %.1f s", one_line(error), backoff.current)  # fmt: skip
                await wait_set(self._stopping, backoff.next_delay())
        return None

    async def _serve(self) -> None:
        from service.worker import actors
        from service.worker.broker import QUEUE
        from service.worker.liveness import HeartbeatMiddleware
        from service.worker.runners import ActorSender, broker_client, broker_options
        from service.worker.sweeper import sweep_until

        broker = actors.broker
        assert isinstance(broker, RedisBroker)
        self._started.set()  # as Dramatiq's Worker.start: the rest may wait for Redis
        heartbeat = HeartbeatMiddleware()
        heartbeat.after_worker_boot(broker, self)
        client = broker_client(broker)
        ready = await self._ready(broker, client)
        if ready is None:
            heartbeat.before_worker_shutdown(broker, self)
            await client.aclose()
            return
        runtime, queues = ready
        poll = self.settings.worker_poll_ms
        waiter = Waiter(waiter_client(broker_options(broker), poll / 1000), broker.namespace,
                        QUEUE)  # fmt: skip
        runtime.task_slots = self.task_slots
        runtime.python_tasks.threads = self.task_threads
        self.consumer = AsyncConsumer(broker, queues, actors.HANDLERS, QUEUE,
                                      RUNS_PER_THREAD * self.worker_threads, poll,
                                      waiter)  # fmt: skip
        if self._stopping.is_set():
            self.consumer.stop(self._stop_timeout)
        sweep_stop = threading.Event()
        sweeper = asyncio.create_task(sweep_until(runtime, sweep_stop), name="sweeper")
        try:
            await self.consumer.run()
        finally:
            sweep_stop.set()
            sweeper.cancel()
            await asyncio.wait([sweeper])
            heartbeat.before_worker_shutdown(broker, self)
            await ActorSender.drain_all()
            await client.aclose()
            await waiter.aclose()
            await runtime.aclose()
            actors.forget_runtime()
