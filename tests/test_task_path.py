"""The lean task path (issue 11 item 3), against a real Redis.

* a claim is one script when the task has no withParams: it records the instance kwargs as
  stored (raw JSON, numbers exact), and two when E1 needs a merge in Python;
* fire -> claim -> complete of a no-op task runs at most four scripts;
* a task's logger is one shared logger with the instance as context, and still records the
  highest level logged.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import orjson
import pytest
from dramatiq.brokers.redis import RedisBroker
from redis.asyncio import Redis

from service.engine import Engine
from service.engine.keys import session_keys
from service.engine.records import iso_time, load_record
from service.settings import Settings
from service.worker.runners import ActorSender, instance_message_id
from service.worker.runtime import WorkerRuntime
from service.worker.sweeper import Sweeper
from tests.conftest import unique_prefix

UID = "path:1"


@contextmanager
def counting(engine: Engine) -> Iterator[Counter[str]]:
    """Counts the scripts the engine runs, by name (the real runner, observed)."""
    calls: Counter[str] = Counter()
    runner = engine.scripts
    original = runner.run

    async def run(name: str, *args: Any, **options: Any) -> Any:
        calls[name] += 1
        return await original(name, *args, **options)

    runner.run = run  # type: ignore[method-assign]
    try:
        yield calls
    finally:
        runner.run = original  # type: ignore[method-assign]


EXACT = b'{"big":12345678901234567,"f":0.12345678901234568,"e":1e-7,"l":[],"o":{}}'
"""Numbers cjson would round (14 significant digits) and an empty list it would turn into {}."""


async def test_claim_without_with_params_is_one_script_and_keeps_numbers_exact(
    any_engine: Engine,
) -> None:
    engine = any_engine
    await engine.configure(UID, {"tasks": {"t": {"after": ["go"], "run": "P"}}})
    kwargs = orjson.loads(EXACT)
    await engine.fire(UID, "go", kwargs)
    with counting(engine) as calls:
        claim = await engine.claim(UID, "t#0")
    assert calls == {"claim": 1}
    assert claim.state == "claimed" and claim.token
    assert claim.kwargs == {"go": kwargs}
    assert claim.task is not None and claim.task.run == "P"
    assert claim.instance is not None and claim.instance.status == "running"
    raw = await engine.client.hget(session_keys(UID, engine.prefix)[4], "t#0")
    # the fired text, byte for byte, spliced into the record; actualKwargs the same ("=")
    assert '[{"go":' + EXACT.decode() + "}," in raw and '"k":"="' in raw
    assert load_record(raw)["meta"]["actualKwargs"] == {"go": kwargs}
    instance = await engine.instance(UID, "t#0")
    assert instance.metadata["actualKwargs"] == {"go": kwargs}


async def test_a_claim_without_the_instance_still_has_kwargs_task_and_schedule_time(
    engine: Engine,
) -> None:
    """The worker's claim (``with_instance=False``) skips the public model; kwargs, task and
    when the instance became scheduled are the same as a full claim's. A retry's clone has no
    schedule time (it waits out its cooldown on purpose)."""
    await engine.configure(UID, {"tasks": {"t": {"after": ["go"], "run": "P"}}})
    await engine.fire(UID, "go", orjson.loads(EXACT))
    full = await engine.instance(UID, "t#0")
    claim = await engine.claim(UID, "t#0", with_instance=False)
    assert claim.state == "claimed" and claim.instance is None
    assert claim.kwargs == {"go": orjson.loads(EXACT)}
    assert claim.task is not None and claim.task.run == "P"
    scheduled = full.metadata["timestamps"]["scheduled"]
    assert claim.scheduledMs is not None and iso_time(claim.scheduledMs) == scheduled
    assert claim.token is not None
    retried = await engine.retry(UID, "t#0", claim.token)
    assert retried.scheduled
    clone = await engine.claim(UID, retried.scheduled[0], with_instance=False)
    assert clone.state == "claimed" and clone.scheduledMs is None


async def test_claim_with_with_params_merges_in_python_in_two_scripts(engine: Engine) -> None:
    config = {"after": ["go"], "run": "P", "withParams": {"go": {"a": 0, "b": 2}, "c": {"k": 1}}}
    await engine.configure(UID, {"tasks": {"t": config}})
    await engine.fire(UID, "go", {"a": 1, "n": 0.12345678901234568})
    with counting(engine) as calls:
        claim = await engine.claim(UID, "t#0")
    assert calls == {"claim": 2}
    expected = {"go": {"a": 1, "b": 2, "n": 0.12345678901234568}, "c": {"k": 1}}
    assert claim.state == "claimed" and claim.kwargs == expected
    assert (await engine.instance(UID, "t#0")).metadata["actualKwargs"] == expected


async def test_claim_answers_for_instances_not_waiting_to_run(engine: Engine) -> None:
    await engine.configure(UID, {"tasks": {"t": {"after": ["go"], "run": "P"}}})
    await engine.fire(UID, "go")
    first = await engine.claim(UID, "t#0")
    assert first.state == "claimed"
    assert (await engine.claim(UID, "t#0")).state == "busy"
    assert first.token is not None
    await engine.complete(UID, "t#0", first.token, {})
    done = await engine.claim(UID, "t#0")
    assert done.state == "done" and done.status == "finished"


async def test_a_no_op_task_runs_at_most_four_scripts(engine: Engine) -> None:
    """fire -> claim -> complete: one script each, nothing for unsubscribed events."""
    engine.event_kinds = ""  # no global subscription (TRIGGERS_WEBHOOKS unset)
    await engine.configure(UID, {"tasks": {"t": {"after": ["go"], "run": "P"}}})
    with counting(engine) as calls:
        await engine.fire(UID, "go", {"x": 1})
        claim = await engine.claim(UID, "t#0")
        assert claim.token is not None
        outcome = await engine.complete(UID, "t#0", claim.token, {})
    assert calls == {"fire": 1, "claim": 1, "complete": 1}
    assert outcome.finalized
    assert not outcome.dispatch  # no subscriber: no sessionFinalized event to hand over


def test_task_logger_is_shared_and_records_the_highest_level(
    caplog: pytest.LogCaptureFixture,
) -> None:
    import asyncio

    from service.worker.python_tasks import TaskContext

    async def no_fire(trigger: str, kwargs: Any) -> None:
        return None

    loop = asyncio.new_event_loop()
    try:
        first = TaskContext("u", "t#1", 1, {}, no_fire, loop)
        second = TaskContext("u", "t#2", 1, {}, no_fire, loop)
    finally:
        loop.close()
    assert first.logger.logger is second.logger.logger  # one logger, whatever the instances
    before = len(logging.Logger.manager.loggerDict)
    with caplog.at_level(logging.DEBUG, logger="triggers.task"):
        first.logger.debug("detail")
        first.logger.warning("careful %s", "here", extra={"mine": 1})
        second.logger.info("fine")
    assert len(logging.Logger.manager.loggerDict) == before
    assert first.log_level == logging.WARNING and second.log_level == logging.INFO
    lines = [(r.name, r.levelno, r.getMessage(), getattr(r, "instance", None)) for r in
             caplog.records]  # fmt: skip
    assert lines == [
        ("triggers.task", logging.DEBUG, "detail", "t#1"),
        ("triggers.task", logging.WARNING, "careful here", "t#1"),
        ("triggers.task", logging.INFO, "fine", "t#2"),
    ]
    assert caplog.records[1].mine == 1  # type: ignore[attr-defined]


async def _failed_and_finalized(engine: Engine, uid: str) -> list[str]:
    """Fails t#0 and finalizes the session (skip); the events the outbox was given."""
    await engine.fire(uid, "go")
    claim = await engine.claim(uid, "t#0")
    assert claim.token is not None
    failed = await engine.fail(uid, "t#0", claim.token, "E", "boom")
    skipped = await engine.skip(uid, "t#0")
    return [entry.name.split(":")[0] for entry in [*failed.dispatch, *skipped.dispatch]]


@pytest.mark.parametrize(
    ("global_kinds", "session_events", "expected"),
    [
        ("", None, []),
        ("", ["instanceFailed"], ["@instanceFailed"]),
        ("", ["*"], ["@instanceFailed", "@sessionFinalized"]),
        ("sessionFinalized", None, ["@sessionFinalized"]),
        ("*", None, ["@instanceFailed", "@sessionFinalized"]),
        ("instanceFailed", ["sessionFinalized"], ["@instanceFailed", "@sessionFinalized"]),
    ],
)
async def test_events_are_recorded_only_for_subscribers(
    engine: Engine, global_kinds: str, session_events: list[str] | None, expected: list[str]
) -> None:
    engine.event_kinds = global_kinds
    config: dict[str, Any] = {"tasks": {"t": {"after": ["go"], "run": "P"}}}
    if session_events is not None:
        config["webhooks"] = [{"url": "http://127.0.0.1:9/hook", "events": session_events}]
    await engine.configure(UID, config)
    assert await _failed_and_finalized(engine, UID) == expected
    outbox = await engine.client.zrange(session_keys(UID, engine.prefix)[8], 0, -1)
    assert sorted(member.split(":")[0] for member in outbox) == expected


def test_global_event_kinds_from_the_setting() -> None:
    from service.factory import global_event_kinds

    assert global_event_kinds(None) == ""
    assert global_event_kinds('[{"url": "http://a/"}]') == "sessionFinalized"
    hooks = orjson.dumps(
        [{"url": "http://a/", "events": ["instanceFailed"]}, {"url": "http://b/", "events": ["*"]}]
    ).decode()
    assert global_event_kinds(hooks) == "*"


@pytest.fixture
async def runtime(redis_url: str, tmp_path: object) -> AsyncIterator[WorkerRuntime]:
    settings = Settings(redis_url=redis_url, key_prefix=unique_prefix(), sweep_interval=0.2,
                        sweep_grace=0, data_dir=str(tmp_path), manager="default")  # fmt: skip
    made = WorkerRuntime(settings)
    yield made
    await made.aclose()


async def test_the_sweeper_re_sends_only_messages_the_broker_no_longer_holds(
    runtime: WorkerRuntime,
) -> None:
    """A queued message (a backlog) is not sent again; a lost one, or one fetched by a dead
    worker, is (sweepSession returns the entry every pass here: grace 0)."""
    from service.worker.actors import run_instance

    broker = run_instance.broker
    assert isinstance(broker, RedisBroker)
    where = broker.client.connection_pool.connection_kwargs
    client = Redis(host=where["host"], port=where["port"], db=where.get("db", 0),
                   decode_responses=True)  # fmt: skip
    uid, engine = f"sweep-{uuid.uuid4().hex[:8]}", runtime.engine
    queue = f"{broker.namespace}:{run_instance.queue_name}"
    dead = f"dead-{uuid.uuid4().hex[:8]}"
    await engine.configure(uid, {"tasks": {"t": {"after": ["go"], "run": "P"}}})
    fired = await engine.fire(uid, "go")
    message = instance_message_id(uid, "t#0", fired.dispatch[0].scheduled)
    await runtime.after(uid, fired)  # sent: queued, no worker runs here
    await ActorSender.drain_all()  # sends are batched per loop tick
    sweeper = Sweeper(runtime)

    async def sweep_and_send() -> int:
        swept = await sweeper.pass_once()
        await ActorSender.drain_all()
        return swept

    async def copies(message: str) -> int:
        return int((await client.lrange(queue, 0, -1)).count(message))

    sent = [message]
    try:
        assert await client.hexists(f"{queue}.msgs", message)
        assert await sweeper.pass_once() == 0  # still queued: not sent again
        assert await copies(message) == 1
        assert await sweeper.pass_once() == 0  # nor in the next grace period
        assert await copies(message) == 1

        await client.hdel(f"{queue}.msgs", message)  # lost (a broker restart, say)
        await client.lrem(queue, 0, message)
        assert await until(sweep_and_send, 1)
        assert await client.hexists(f"{queue}.msgs", message)  # re-sent under the same id
        assert await copies(message) == 1
        assert await sweeper.pass_once() == 0  # the re-sent message is found: not sent again
        assert await copies(message) == 1

        await client.lrem(queue, 0, message)  # fetched by a worker that then died
        await client.zadd(f"{broker.namespace}:__heartbeats__", {dead: 1})
        await client.sadd(f"{broker.namespace}:__acks__.{dead}.{run_instance.queue_name}", message)
        assert await until(sweep_and_send, 1)
        assert await client.hexists(f"{queue}.msgs", message) and await copies(message) == 1
    finally:
        for each in sent:
            await client.lrem(queue, 0, each)
            await client.hdel(f"{queue}.msgs", each)
        await client.zrem(f"{broker.namespace}:__heartbeats__", dead)
        await client.delete(f"{broker.namespace}:__acks__.{dead}.{run_instance.queue_name}")
        await sweeper.queued.aclose()
        await client.aclose()


async def until(attempt: Any, wanted: int, deadline: float = 20.0) -> bool:
    """Runs ``attempt`` until it answers ``wanted`` (a sweep pass may find the session not due
    yet, right after a re-score)."""
    ends = time.monotonic() + deadline
    while time.monotonic() < ends:
        if await attempt() == wanted:
            return True
        await asyncio.sleep(0.1)
    return False


LIBRARY = """--[=[ header: local function documented() end ]=]
pcall(redis.replicate_commands)
local K = {
  meta = KEYS[1],
}
local NOW = 1

-- helper's comment
local function helper(x)
  return x + NOW -- uses NOW
end

local function unused()
  return 'helper' -- a string naming helper is no use of it
end

local A, B = 1, 2
local function user()
  return helper(A)
end
"""


def test_a_script_carries_only_the_library_parts_it_uses() -> None:
    from service.engine.scripts import LuaLibrary

    library = LuaLibrary(LIBRARY)
    source = library.needed_by("return user() + #K.meta")
    assert "pcall(redis.replicate_commands)" in source  # defines nothing: always kept
    assert "local function unused" not in source and "header" not in source
    for part in ("local K = {\n  meta = KEYS[1],\n}", "local NOW = 1", "-- helper's comment",
                 "local function helper", "local A, B = 1, 2", "local function user"):  # fmt: skip
        assert part in source
    order = [source.index(part) for part in ("local K", "NOW = 1", "helper(x)", "A, B", "user()")]
    assert order == sorted(order)  # the library's own order
    assert "local function helper" not in library.needed_by("return unused()")


def test_engine_scripts_leave_out_what_they_do_not_use() -> None:
    from service.engine.scripts import load_sources

    sources = {name: script.source for name, script in load_sources().items()}
    assert "local function fire(" in sources["fire"]
    assert "local function fire(" in sources["complete"]  # its cascade
    for name in ("claim", "readConfig", "ackDispatched", "sweepSession", "renewLease"):
        assert "local function fire(" not in sources[name], name
    assert "local function emit_event(" not in sources["claim"]
    assert len(sources["readConfig"]) < len(sources["fire"]) / 4


async def test_a_second_dispatch_survives_the_ack_of_the_first(runtime: WorkerRuntime) -> None:
    """A retry with no cooldown is sent while the worker that ran the first attempt has not
    acknowledged its message yet; Dramatiq's ack deletes the message data under the acked id,
    so the two dispatches must not share one (the times they became scheduled differ)."""
    from service.worker.actors import run_instance

    broker = run_instance.broker
    assert isinstance(broker, RedisBroker)
    uid, name = f"again-{uuid.uuid4().hex[:8]}", "t#0"
    first, second = instance_message_id(uid, name, 1_000), instance_message_id(uid, name, 2_000)
    assert first != second
    queue = f"{broker.namespace}:{run_instance.queue_name}"
    sender = ActorSender()
    await sender.send(run_instance, (uid, name), 0, first)
    await sender.drain()
    fetched = broker.do_fetch(run_instance.queue_name, 1)  # a worker takes the first attempt
    assert len(fetched) == 1
    await sender.send(run_instance, (uid, name), 0, second)  # its retry, due at once
    await sender.drain()
    broker.do_ack(run_instance.queue_name, first)  # the first attempt's message is acked
    assert broker.client.hexists(f"{queue}.msgs", second)
    broker.client.lrem(queue, 0, second)
    broker.client.hdel(f"{queue}.msgs", second)


async def test_a_session_whose_messages_are_all_queued_is_watched_later(
    runtime: WorkerRuntime,
) -> None:
    """Behind a backlog the sweeper backs off (twice the time since the entry's last stamp)
    instead of visiting every grace period; a lease that expires sooner still wins."""
    uid, engine = f"backlog-{uuid.uuid4().hex[:8]}", runtime.engine
    await engine.configure(uid, {"tasks": {"t": {"after": ["go"], "run": "P"},
                                           "u": {"after": ["go"], "run": "P"}}})  # fmt: skip
    fired = await engine.fire(uid, "go")
    await runtime.after(uid, fired)
    await ActorSender.drain_all()  # both messages queued; no worker consumes them here
    keys = session_keys(uid, engine.prefix)
    stamped = int(time.time() * 1000) - 10_000  # as if last looked at 10 s ago
    await engine.client.zadd(keys[8], {"t#0": stamped, "u#0": stamped})
    sweeper = Sweeper(runtime)
    found = await engine.sweep(uid, 0)
    assert sorted(e.name for e in found.stranded) == ["t#0", "u#0"]
    assert found.later is None  # nothing else outstanding
    before = int(time.time() * 1000)
    watch = sweeper.backed_off(found)
    assert watch is not None and watch >= before + 19_000  # twice the 10 s since the stamp

    claim = await engine.claim(uid, "u#0", lease_ms=5_000)  # its lease bounds the wait
    assert claim.state == "claimed"
    await engine.client.zadd(keys[8], {"t#0": stamped})
    found = await engine.sweep(uid, 0)
    assert [e.name for e in found.stranded] == ["t#0"] and found.later is not None
    assert found.later <= claim.expires
    assert sweeper.backed_off(found) == found.later  # sooner than twice the 10 s


async def test_a_pass_over_queued_messages_rescores_the_session_later(
    runtime: WorkerRuntime,
) -> None:
    uid, engine = f"backlog-{uuid.uuid4().hex[:8]}", runtime.engine
    await engine.configure(uid, {"tasks": {"t": {"after": ["go"], "run": "P"}}})
    await runtime.after(uid, await engine.fire(uid, "go"))
    await ActorSender.drain_all()
    keys = session_keys(uid, engine.prefix)
    await engine.client.zadd(keys[8], {"t#0": int(time.time() * 1000) - 10_000})
    await asyncio.sleep(1.5)  # the fire's marks older than the settle time (1 s)
    sweeper = Sweeper(runtime)
    ends = time.monotonic() + 20
    while sweeper.visited == 0 and time.monotonic() < ends:  # the only session of its prefix
        assert await sweeper.pass_once() == 0  # held: nothing re-sent
    score = dict(await engine.pending_sessions())[uid]
    assert score >= int(time.time() * 1000) + 15_000  # not in the next grace period (0 here)
