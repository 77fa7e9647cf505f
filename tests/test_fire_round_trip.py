"""One script per change for runners whose hand-over is a no-op, and post-marks sent in batches.

``external``: the dispatcher tells the engine it is settled at commit, so the changing script
keeps no outbox entry for a due instance (no ackDispatched after it), while an entry due later
(a retry cooling down) stays, and the sweeper's re-send of it is acknowledged as before. The
post-mark of a change that scheduled work is not awaited by the change: it reaches the pending
index with the next batch (engine.drain_marks, which the index reads call first).
"""

from __future__ import annotations

import asyncio
import time

from service.engine import Engine
from service.engine.keys import session_keys
from service.settings import Settings
from service.worker.dispatch import Dispatcher, load_runners

EXTERNAL = {"tasks": {"t": {"after": ["go"], "run": "x", "using": "external", "maxRetries": 3}}}
DRAMATIQ = {"tasks": {"d": {"after": ["go"], "run": "tests.tasks_for_tests:echo"}}}


def now_ms() -> int:
    return int(time.time() * 1000)


async def outbox(engine: Engine, uid: str) -> dict[str, float]:
    key = session_keys(uid, engine.prefix)[8]
    return dict(await engine.client.zrange(key, 0, -1, withscores=True))


async def test_a_due_external_instance_leaves_no_outbox_entry(any_engine: Engine) -> None:
    engine, uid = any_engine, "settle:1"
    engine.settle_at_commit({"external"})
    await engine.configure(uid, EXTERNAL)
    outcome = await engine.fire(uid, "go")
    assert outcome.scheduled == ["t#0"]
    assert [entry.runner for entry in outcome.dispatch] == ["external"]
    assert await outbox(engine, uid) == {}
    assert (await engine.instance(uid, "t#0")).status == "scheduled"
    claim = await engine.claim(uid, "t#0")  # the external worker takes it, as before
    assert claim.state == "claimed"


async def test_without_settled_runners_the_entry_waits_for_its_ack(engine: Engine) -> None:
    uid = "settle:2"
    await engine.configure(uid, EXTERNAL)
    await engine.fire(uid, "go")
    assert list(await outbox(engine, uid)) == ["t#0"]
    assert await engine.ack_dispatched(uid, ["t#0"]) == 1


async def test_a_settled_entry_keeps_the_session_ttl_of_outstanding_work(
    redis_url: str,
) -> None:
    """The TTL is figured as if the entry were in the outbox until the script ends (as when
    ackDispatched dropped it after the script): work outstanding holds the session longer."""
    from tests.conftest import engine_on, unique_prefix

    async with engine_on(redis_url, unique_prefix(), session_ttl=100) as engine:
        engine.settle_at_commit({"external"})
        await engine.configure("settle:3", EXTERNAL)
        await engine.fire("settle:3", "go")
        ttl = await engine.client.ttl(session_keys("settle:3", engine.prefix)[0])
        assert ttl > 100  # TTL + the hold of outstanding work


async def test_an_external_retry_cooling_down_stays_until_the_sweeper_hands_it_over(
    engine: Engine,
) -> None:
    uid = "settle:4"
    dispatcher = Dispatcher(engine, load_runners(), Settings())
    assert engine.settled_runners == {"external"}
    await engine.configure(uid, EXTERNAL)
    fired = await engine.fire(uid, "go")
    await dispatcher.dispatch(uid, fired)
    claim = await engine.claim(uid, "t#0")
    assert claim.token is not None
    retried = await engine.retry(uid, "t#0", claim.token, cooldown=0.2)
    await dispatcher.dispatch(uid, retried)  # not due yet: no acknowledgement drops it
    assert list(await outbox(engine, uid)) == ["t#1"]
    deadline = time.monotonic() + 30
    while True:  # once due, the sweeper's re-send (not committed just now) acknowledges it
        swept = await engine.sweep(uid, 0)
        if swept.stranded:
            break
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    await dispatcher.hand_over(uid, swept.stranded)
    assert await outbox(engine, uid) == {}


async def test_the_post_mark_reaches_the_pending_index(any_engine: Engine) -> None:
    engine, uid = any_engine, "settle:5"
    await engine.configure(uid, DRAMATIQ)
    before = now_ms()
    outcome = await engine.fire(uid, "go")
    assert outcome.scheduled == ["d#0"]
    score = dict(await engine.pending_sessions())[uid]  # drains this process's marks first
    assert score <= now_ms() + engine.sweep_grace_ms  # due + grace, not the pre-mark's 60 s
    assert score >= before + engine.sweep_grace_ms


async def test_an_external_fire_needs_no_post_mark(engine: Engine) -> None:
    uid = "settle:6"
    engine.settle_at_commit({"external"})
    await engine.configure(uid, EXTERNAL)
    before = now_ms()
    await engine.fire(uid, "go")
    score = dict(await engine.pending_sessions())[uid]
    assert score >= before + 30_000  # only the pre-mark: nothing in the outbox to watch
