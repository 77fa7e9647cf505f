"""The sweeper at scale (issue 14, item 4): the pending index is scored by when each session
next needs attention, a pass reads only what is due, and what it visits is re-scored.

* 1,100 sessions whose retry cools down for an hour do not delay the recovery of one victim
  whose worker died (its lease expires): re-sent within lease + 2 sweep intervals;
* an expired lease is re-sent at most once per grace period, not on every pass;
* a fire that scheduled nothing does not make its session due;
* a fire that lands between the sweep of a session and its re-scoring keeps the session due.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from service.engine import Engine
from service.engine.keys import session_keys
from service.engine.models import SweepResult
from service.settings import Settings
from service.worker.runtime import WorkerRuntime
from service.worker.sweeper import Sweeper
from tests.conftest import unique_prefix

INTERVAL = 0.5
GRACE = 1.0
LEASE_MS = 1500
GRACE_MS = int(GRACE * 1000)
EXTERNAL = {"tasks": {"t": {"after": ["go"], "run": "x", "using": "external",
                            "maxRetries": 5}}}  # fmt: skip


def now_ms() -> int:
    return int(time.time() * 1000)


@pytest.fixture
async def runtime(redis_url: str, tmp_path: object) -> AsyncIterator[WorkerRuntime]:
    settings = Settings(redis_url=redis_url, key_prefix=unique_prefix(), sweep_interval=INTERVAL,
                        sweep_grace=GRACE, data_dir=str(tmp_path), manager="default")  # fmt: skip
    made = WorkerRuntime(settings)
    # EXTERNAL stands for any runner whose entries wait in the outbox until taken (these tests
    # never hand them over); the external runner's own settling at commit: test_fire_round_trip
    made.engine.settle_at_commit(())
    yield made
    await made.aclose()


async def claimed_session(runtime: WorkerRuntime, uid: str) -> str:
    """A session whose one task ``t#0`` is claimed; its lease token."""
    engine = runtime.engine
    await engine.configure(uid, EXTERNAL)
    await engine.fire(uid, "go")
    claim = await engine.claim(uid, "t#0")
    assert claim.token is not None
    return claim.token


async def cooling_session(runtime: WorkerRuntime, uid: str) -> None:
    """A session whose task asked for a retry in an hour: legitimately pending all that time."""
    token = await claimed_session(runtime, uid)
    await runtime.engine.retry(uid, "t#0", token, cooldown=3600)


async def finished_session(runtime: WorkerRuntime, uid: str) -> None:
    """A session whose one task ran and finished: nothing outstanding."""
    token = await claimed_session(runtime, uid)
    await runtime.engine.complete(uid, "t#0", token)


async def run_until(sweeper: Sweeper, done: Any, timeout: float) -> float:
    """Runs the sweeper's own loop until ``done()``; returns the seconds it took."""
    stop = threading.Event()
    task = asyncio.create_task(sweeper.run(stop))
    started = time.monotonic()
    try:
        while time.monotonic() - started < timeout:
            if done():
                return time.monotonic() - started
            await asyncio.sleep(0.02)
        raise AssertionError(f"not done after {timeout} s")
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_a_dead_workers_instance_is_recovered_behind_1100_cooling_sessions(
    runtime: WorkerRuntime,
) -> None:
    engine = runtime.engine
    semaphore = asyncio.Semaphore(20)

    async def one(n: int) -> None:
        async with semaphore:
            await cooling_session(runtime, f"cool:{n}")

    await asyncio.gather(*(one(n) for n in range(1100)))
    sweeper = Sweeper(runtime)
    await asyncio.sleep(GRACE + 0.2)  # whatever the setup left due becomes due now
    for _ in range(3):
        await sweeper.pass_once()  # settles the index; the cooling sessions re-send nothing
    assert sweeper.swept == 0

    await engine.configure("victim", EXTERNAL)
    await engine.fire("victim", "go")
    claim = await engine.claim("victim", "t#0", lease_ms=LEASE_MS)  # then the worker dies
    assert claim.state == "claimed"
    claimed_at = time.monotonic()
    await run_until(sweeper, lambda: sweeper.swept >= 1, timeout=60)
    recovered_after = time.monotonic() - claimed_at
    assert recovered_after <= LEASE_MS / 1000 + 2 * INTERVAL + 1.0, recovered_after  # +1 s: load

    # Nobody claims it again: the expired lease is re-sent once per grace period, not per pass.
    first = sweeper.swept
    watched = 4 * GRACE
    with pytest.raises(AssertionError):
        await run_until(sweeper, lambda: False, timeout=watched)
    passes = watched / INTERVAL
    assert sweeper.swept - first <= watched / GRACE + 1 < passes, sweeper.swept - first


async def test_a_fire_that_scheduled_nothing_does_not_make_its_session_due(
    runtime: WorkerRuntime,
) -> None:
    engine = runtime.engine
    await engine.configure("quiet", EXTERNAL)
    before = now_ms()
    await engine.fire("quiet", "unrelated")
    scores = dict(await engine.pending_sessions())
    assert "quiet" not in scores or scores["quiet"] >= before + 30_000


async def test_a_fire_between_sweep_and_rescore_keeps_the_session_due(
    runtime: WorkerRuntime,
) -> None:
    """The interleaving of the old prune race, step by step: the sweeper reads the session as
    due and sweeps it (nothing outstanding), then a fire schedules work, then the sweeper
    re-scores what it read. The session must stay in the index, due by the fire's due time +
    grace; and the next passes hand the stranded entry over."""
    engine = runtime.engine
    await engine.configure("race", EXTERNAL)
    await engine.mark_pending("race", now_ms())  # due now, as after any earlier change
    read_at = now_ms()
    [(uid, score)] = [e for e in await engine.due_sessions(read_at, 10) if e[0] == "race"]
    found = await engine.sweep(uid, int(GRACE * 1000))
    assert found.next is None  # nothing outstanding when swept
    outcome = await engine.fire(uid, "go")  # committed; its caller dies before the hand-over
    assert outcome.scheduled == ["t#0"]
    await engine.rescore_pending(uid, score, found.next, read_at, settle_ms=int(GRACE * 1000),
                                 hold_ms=LEASE_MS)  # fmt: skip
    scores = dict(await engine.pending_sessions())
    assert uid in scores and scores[uid] <= now_ms() + GRACE * 1000 + 500
    sweeper = Sweeper(runtime)
    await run_until(sweeper, lambda: sweeper.swept >= 1, timeout=30)


async def test_a_pass_reads_only_due_sessions_and_removes_finished_ones(
    runtime: WorkerRuntime,
) -> None:
    engine = runtime.engine
    await cooling_session(runtime, "later")
    await finished_session(runtime, "done")
    sweeper = Sweeper(runtime)
    await asyncio.sleep(GRACE + 0.2)
    await sweeper.pass_once()
    scores = dict(await engine.pending_sessions())
    assert "done" not in scores  # nothing outstanding: left the index
    assert scores["later"] >= now_ms() + 3500 * 1000  # the retry is due in an hour (+ grace)
    assert sweeper.swept == 0


async def test_the_pending_index_on_standalone_and_cluster(any_engine: Engine) -> None:
    """Marks, the due read, the sweep and the re-score, on both topologies (the index keys
    share one slot of their own; the sweep runs in the session's slot)."""
    engine, uid = any_engine, "idx:1"
    await engine.configure(uid, EXTERNAL)
    outcome = await engine.fire(uid, "go")  # never handed over
    assert outcome.scheduled == ["t#0"]
    read_at = now_ms() + engine.sweep_grace_ms + 1000
    [(found_uid, score)] = await engine.due_sessions(read_at, 10)
    assert found_uid == uid
    swept = await engine.sweep(uid, 0)
    assert [entry.name for entry in swept.stranded] == ["t#0"]
    assert swept.next is not None
    assert await engine.rescore_pending(uid, score, swept.next, read_at, settle_ms=0, hold_ms=0)
    await engine.ack_dispatched(uid, ["t#0"])  # the external runner took it
    score = dict(await engine.pending_sessions())[uid]
    assert await engine.sweep(uid, 0) == SweepResult()  # nothing outstanding
    later = now_ms() + 120_000
    assert not await engine.rescore_pending(uid, score, None, later, settle_ms=0, hold_ms=0)
    assert await engine.pending_sessions() == []


async def test_a_change_whose_caller_died_after_its_script_stays_watched(
    runtime: WorkerRuntime,
) -> None:
    """The other side of the race: the change pre-marked its session just before the sweeper
    read the index, its script ran after the sweep, and its caller died before the post-mark
    (and before the hand-over). The re-score must keep the session watched, within the hold."""
    engine, uid = runtime.engine, "race:died"
    await engine.configure(uid, EXTERNAL)
    await engine.mark_pending(uid, now_ms())  # due now, as after any earlier change
    await asyncio.sleep(GRACE + 0.1)  # that mark has landed long ago
    premarked = now_ms()
    await engine.scripts.mark(engine._mark(uid, 60_000))  # the change's first step
    read_at = now_ms()
    [(_, score)] = [e for e in await engine.due_sessions(read_at, 10) if e[0] == uid]
    found = await engine.sweep(uid, int(GRACE * 1000))
    assert found.next is None
    keys = engine._keys(uid, None)  # the change's script, without its post-mark: it died
    await engine.scripts.run("fire", keys, [0, "0", "", 0, "go", "{}"])
    hold = LEASE_MS
    await engine.rescore_pending(uid, score, found.next, read_at, settle_ms=int(GRACE * 1000),
                                 hold_ms=hold)  # fmt: skip
    assert dict(await engine.pending_sessions())[uid] <= premarked + hold + 100


async def test_a_session_whose_sweep_fails_does_not_stall_the_others(
    runtime: WorkerRuntime,
) -> None:
    engine = runtime.engine
    for uid in ("broken", "fine"):
        await engine.configure(uid, EXTERNAL)
        await engine.fire(uid, "go")  # never handed over
        await engine.mark_pending(uid, 0)
    inst_key = session_keys("broken", engine.prefix)[4]
    await engine.client.hset(inst_key, "t#0", "not json")  # its sweep script now fails
    await asyncio.sleep(GRACE + 0.1)
    sweeper = Sweeper(runtime)
    assert await sweeper.pass_once() == 1  # fine's entry was re-sent all the same
    assert dict(await engine.pending_sessions())["broken"] > now_ms()  # tried again later


async def test_a_session_with_nothing_outstanding_is_dropped_without_a_sweep_script(
    runtime: WorkerRuntime,
) -> None:
    """The sweeper looks (one EXISTS of the outbox, the leases and the due webhook attempts)
    before it sweeps: a finished session leaves the index with no sweepSession; one with an
    outbox entry or a lease is swept as before."""
    engine = runtime.engine
    await cooling_session(runtime, "cooling")  # its clone waits in the outbox
    await engine.configure("running", EXTERNAL)
    await engine.fire("running", "go")
    assert (await engine.claim("running", "t#0", lease_ms=60_000)).state == "claimed"
    await finished_session(runtime, "done")
    sweeper = Sweeper(runtime)
    assert [await sweeper.idle(uid) for uid in ("cooling", "running", "done")] == [
        False, False, True,
    ]  # fmt: skip
    assert await sweeper.idle_among(["cooling", "running", "done", "never"]) == {"done", "never"}
    swept: list[str] = []
    original = engine.sweep

    async def sweep(uid: str, grace_ms: int) -> SweepResult:
        swept.append(uid)
        return await original(uid, grace_ms)

    engine.sweep = sweep  # type: ignore[method-assign]
    read = dict(await engine.pending_sessions())
    for uid in ("cooling", "running", "done"):  # read well after every mark: none is recent
        await sweeper.visit(uid, read[uid], now_ms() + 10 * GRACE_MS)
    assert swept == ["cooling", "running"]
    scores = dict(await engine.pending_sessions())
    assert "done" not in scores and "cooling" in scores and "running" in scores
