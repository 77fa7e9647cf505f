"""The worker's coalescing script runner (service/worker/coalesce.py), against a real Redis:
concurrent calls share one exchange on one connection, each caller gets its own answer and
its own error, NOSCRIPT is repaired per call, and the transitions behave as without it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import Redis

from service.engine import ConflictError, Engine
from service.worker.coalesce import CoalescingScriptRunner
from tests.conftest import unique_prefix

TASKS = {"tasks": {"t": {"after": ["go"], "run": "P"}}}


@pytest.fixture
async def engine(redis_url: str) -> AsyncIterator[Engine]:
    engine = Engine(Redis.from_url(redis_url, decode_responses=True), prefix=unique_prefix())
    engine.scripts = CoalescingScriptRunner(engine.client)  # type: ignore[arg-type]
    await engine.load_scripts()
    yield engine
    await engine.aclose()


def exchanges(runner: Any) -> list[int]:
    """Records how many calls each exchange carried (wrapping the real one)."""
    sizes: list[int] = []
    original = runner._exchange

    async def exchange(batch: list[Any]) -> None:
        sizes.append(len(batch))
        await original(batch)

    runner._exchange = exchange
    return sizes


async def test_concurrent_transitions_share_one_exchange_and_each_gets_its_answer(
    engine: Engine,
) -> None:
    uids = [f"co:{n}" for n in range(20)]
    await asyncio.gather(*(engine.configure(uid, TASKS) for uid in uids))
    sizes = exchanges(engine.scripts)
    fired = await asyncio.gather(*(engine.fire(uid, "go", {"n": n}) for n, uid in enumerate(uids)))
    assert sizes == [20]  # one exchange for the twenty fires
    assert all(outcome.scheduled == ["t#0"] for outcome in fired)
    claims = await asyncio.gather(*(engine.claim(uid, "t#0") for uid in uids))
    assert [claim.kwargs for claim in claims] == [{"go": {"n": n}} for n in range(20)]
    done = await asyncio.gather(*(
        engine.complete(uid, "t#0", claim.token or "", {"n": n})
        for n, (uid, claim) in enumerate(zip(uids, claims, strict=True))
    ))  # fmt: skip
    assert all(outcome.finalized for outcome in done)
    assert sizes == [20, 20, 20]
    for n, uid in enumerate(uids):
        instance = await engine.instance(uid, "t#0")
        assert instance.status == "finished" and instance.metadata["result"] == {"n": n}


async def test_an_error_reply_goes_to_its_caller_only(engine: Engine) -> None:
    await asyncio.gather(*(engine.configure(uid, TASKS) for uid in ("e:1", "e:2")))
    await asyncio.gather(*(engine.fire(uid, "go") for uid in ("e:1", "e:2")))
    _, second = await asyncio.gather(*(engine.claim(uid, "t#0") for uid in ("e:1", "e:2")))
    sizes = exchanges(engine.scripts)
    stale, fine = await asyncio.gather(
        engine.complete("e:1", "t#0", "not-the-token", {}),
        engine.complete("e:2", "t#0", second.token or "", {}),
        return_exceptions=True,
    )
    assert sizes == [2]
    assert isinstance(stale, ConflictError)
    assert not isinstance(fine, BaseException) and fine.finalized
    assert (await engine.instance("e:1", "t#0")).status == "running"  # untouched by the refusal


async def test_noscript_is_repaired_per_call(engine: Engine) -> None:
    """A Redis that lost its scripts (a restart) answers NOSCRIPT to each call of the exchange;
    each caller loads the script and runs its call again, once."""
    uids = [f"ns:{n}" for n in range(5)]
    await asyncio.gather(*(engine.configure(uid, TASKS) for uid in uids))
    await engine.client.script_flush()
    fired = await asyncio.gather(*(engine.fire(uid, "go") for uid in uids))
    assert all(outcome.scheduled == ["t#0"] for outcome in fired)
    assert await engine.client.script_exists(engine.scripts.scripts["fire"].sha) == [True]


async def test_a_cancelled_caller_leaves_the_exchange_in_step(engine: Engine) -> None:
    """Cancelling one waiting caller neither cuts the exchange nor desynchronises the
    connection: the other callers get their own answers, later calls too."""
    uids = [f"cc:{n}" for n in range(6)]
    await asyncio.gather(*(engine.configure(uid, TASKS) for uid in uids))
    calls = [asyncio.ensure_future(engine.fire(uid, "go")) for uid in uids]
    await asyncio.sleep(0)  # every call queued in this iteration's batch
    calls[2].cancel()
    results = await asyncio.gather(*calls, return_exceptions=True)
    assert isinstance(results[2], asyncio.CancelledError)
    assert all(not isinstance(r, BaseException) and r.scheduled == ["t#0"]
               for n, r in enumerate(results) if n != 2)  # fmt: skip
    others = [uid for n, uid in enumerate(uids) if n != 2]
    claims = await asyncio.gather(*(engine.claim(uid, "t#0") for uid in others))
    assert [claim.state for claim in claims] == ["claimed"] * 5


async def test_a_connection_error_fails_every_call_of_the_exchange() -> None:
    """Each caller of a failed exchange gets the error; nothing is re-sent."""
    from service.engine.connection import redis_client
    from service.redis_server import free_port

    client = redis_client(f"redis://127.0.0.1:{free_port()}/0", pool_timeout=1)
    engine = Engine(client, prefix=unique_prefix())
    engine.scripts = CoalescingScriptRunner(client)  # type: ignore[arg-type]
    try:
        results = await asyncio.gather(
            *(engine.fire(f"ce:{n}", "go") for n in range(3)), return_exceptions=True
        )
    finally:
        await engine.aclose()
    assert all(isinstance(r, Exception) and "Error" in type(r).__name__ for r in results)


async def test_a_flush_cancelled_before_it_started_cancels_its_calls_and_the_next_call_works(
    engine: Engine,
) -> None:
    """The loop closing cancels every task, a flush that has not started yet too: its callers
    are cancelled with it, none waits for ever, and a later call makes a flush of its own."""
    runner: Any = engine.scripts
    await engine.configure("co:cancelled", TASKS)
    caller = asyncio.ensure_future(engine.fire("co:cancelled", "go", {}))
    await asyncio.sleep(0)  # the caller queued its call; the flush task has not run yet
    flush = runner._next_flush
    assert flush is not None and not flush.done()
    flush.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert runner._next_flush is None and not runner._waiting
    outcome = await engine.fire("co:cancelled", "go", {})
    assert outcome.scheduled == ["t#0"]  # the cancelled call never reached Redis
