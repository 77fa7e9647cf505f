"""The engine against the reference model (tests/reference_model.py), driven by hypothesis.

A rule-based state machine performs random sequences of configure / fire / claim / complete /
fail / replay / skip / "work" (run everything scheduled) and refused replays and skips on a real
engine and on the model, and after every step compares the whole observable session: instance
names, statuses, kwargs, abandonState, parent/depth/result metadata, latestKwargs, the stored
task definitions, and the fires (with what each scheduled and abandoned) of every returned
Outcome.

The engine runs with ``finalize=False``: the finalization recipe (L1) is not modelled.
The async engine is driven from hypothesis' synchronous machine through a dedicated event loop.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    precondition,
    rule,
    run_state_machine_as_test,
)
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from service.engine import ConflictError, Engine, InvalidError, Outcome
from service.engine.keys import KEY_NAMES, session_keys
from service.redis_server import RedisClusterServer
from tests.reference_model import (
    Fire,
    InvalidState,
    Model,
    RingError,
    TaskDef,
    has_every_ring,
    number_of,
)

T = TypeVar("T")

TRIGGERS = ["A", "B", "C", "D"]
PADDING = {f"pad_{i}": {"after": ["never fired"], "run": "P"} for i in range(8)}
"""Inert tasks that take a session past lib.lua SCAN_TASKS (8), so that its fires use the
trigger index rather than a scan of its defs (the machine's own configurations are smaller)."""
TASK_NAMES = ["t_x", "t_y", "t_z"]
ALPHABET = TRIGGERS + TASK_NAMES  # task names are the cascade triggers (B10, F4)


# -- strategies --------------------------------------------------------------------------------


@st.composite
def task_config(draw: st.DrawFn) -> dict[str, Any]:
    """One task definition as a client gives it: mostly application triggers, often one task
    name (a cascade, F4); duplicates allowed (after and unless are sets, B2); after non-empty
    unless andEvery is set (the service refuses a task that could never run)."""
    after = draw(st.lists(st.sampled_from(TRIGGERS), max_size=2))
    if draw(st.booleans()):
        after.append(draw(st.sampled_from(TASK_NAMES)))
    kind = draw(st.sampled_from(["none", "none", "none", "trigger", "trigger", "task"]))
    every = None
    if kind != "none":
        every = draw(st.sampled_from(TRIGGERS if kind == "trigger" else TASK_NAMES))
    if not after and every is None:
        after = [draw(st.sampled_from(TRIGGERS))]
    config: dict[str, Any] = {"after": after, "run": "P"}
    if every is not None:
        config["andEvery"] = every
    if draw(st.integers(0, 3)) == 0:  # one task in four has an unless list
        config["unless"] = draw(st.lists(st.sampled_from(ALPHABET), min_size=1, max_size=2))
    return config


def configurations(min_size: int, max_size: int) -> st.SearchStrategy[dict[str, dict[str, Any]]]:
    return st.dictionaries(
        st.sampled_from(TASK_NAMES), task_config(), min_size=min_size, max_size=max_size
    )


def ring_free(tasks: dict[str, dict[str, Any]]) -> bool:
    return not has_every_ring({name: TaskDef.from_config(c) for name, c in tasks.items()})


# -- comparison helpers ------------------------------------------------------------------------


def engine_fires(outcome: Outcome) -> list[tuple[str, list[str], list[str]]]:
    return [(f.trigger, list(f.scheduled), list(f.abandoned)) for f in outcome.fires]


def model_fires(fires: list[Fire]) -> list[tuple[str, list[str], list[str]]]:
    return [(f.trigger, f.scheduled, f.abandoned) for f in fires]


def assert_outcome(outcome: Outcome, fires: list[Fire], clone: str | None = None) -> None:
    assert engine_fires(outcome) == model_fires(fires), "fires of the outcome"
    scheduled = [name for f in fires for name in f.scheduled]
    if clone is not None:
        scheduled.append(clone)
    assert outcome.scheduled == scheduled, "Outcome.scheduled"
    assert outcome.abandoned == [name for f in fires for name in f.abandoned], "Outcome.abandoned"
    assert outcome.clone == clone
    assert not outcome.finalized


def instance_order(name: str) -> tuple[str, int]:
    return name.rsplit("#", 1)[0], number_of(name)


# -- the machine -------------------------------------------------------------------------------


class EngineVersusModel(RuleBasedStateMachine):
    """One example = one fresh session (uid) of the shared engine. Subclassed per backend with
    ``loop`` and ``engine`` set (see make_machine)."""

    loop: asyncio.AbstractEventLoop
    engine: Engine
    padded = False
    """Whether each session also holds PADDING (configured before its first configuration)."""

    def __init__(self) -> None:
        super().__init__()
        self.uid = f"prop-{uuid.uuid4().hex}"
        self.model = Model()
        self.tokens: dict[str, str] = {}  # lease tokens of running instances
        self.seq = 0  # every fire, result and replacement carries a distinct value
        self.padding: set[str] = set()  # PADDING, once configured

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    def value(self) -> dict[str, int]:
        self.seq += 1
        return {"v": self.seq}

    # -- steps --------------------------------------------------------------------------------

    @initialize(
        early=st.lists(st.sampled_from(TRIGGERS), max_size=2),
        tasks=configurations(1, 3).filter(ring_free),
    )
    def start(self, early: list[str], tasks: dict[str, dict[str, Any]]) -> None:
        """Optionally fire before any configuration (N9, D12), then configure."""
        for trigger in early:
            self.do_fire(trigger)
        if self.padded:
            self.run(self.engine.configure(self.uid, {"tasks": PADDING}))
            self.padding = set(PADDING)
        self.do_configure(tasks)

    @rule(tasks=configurations(1, 2))
    def configure(self, tasks: dict[str, dict[str, Any]]) -> None:
        """Redefine or add tasks (B1, B11); rings of andEvery cascades are refused (M12)."""
        self.do_configure(tasks)

    @rule(triggers=st.lists(st.sampled_from(TRIGGERS), min_size=1, max_size=3))
    def fire(self, triggers: list[str]) -> None:
        for trigger in triggers:
            self.do_fire(trigger)

    @precondition(lambda self: bool(self.model.names_with("scheduled")))
    @rule(failing=st.sets(st.sampled_from(TASK_NAMES), max_size=1))
    def work(self, failing: set[str]) -> None:
        """Run every instance scheduled now (not those their cascades schedule): the tasks in
        ``failing`` fail, the others finish with a result."""
        for name in self.model.names_with("scheduled"):
            self.do_claim(name)
            if self.model.instances[name].task in failing:
                self.do_fail(name)
            else:
                self.do_complete(name, {"r": self.value()["v"]})

    @precondition(lambda self: bool(self.model.names_with("scheduled")))
    @rule(data=st.data())
    def claim(self, data: st.DataObject) -> None:
        name = data.draw(st.sampled_from(self.model.names_with("scheduled")), label="claim")
        self.do_claim(name)

    @precondition(lambda self: bool(self.model.names_with("scheduled", "running")))
    @rule(data=st.data(), empty=st.booleans())
    def complete(self, data: st.DataObject, empty: bool) -> None:
        name = data.draw(
            st.sampled_from(self.model.names_with("scheduled", "running")), label="complete"
        )
        if self.model.instances[name].status == "scheduled":
            self.do_claim(name)
        self.do_complete(name, {} if empty else {"r": self.value()["v"]})

    @precondition(lambda self: bool(self.model.names_with("scheduled", "running")))
    @rule(data=st.data())
    def fail(self, data: st.DataObject) -> None:
        name = data.draw(
            st.sampled_from(self.model.names_with("scheduled", "running")), label="fail"
        )
        if self.model.instances[name].status == "scheduled":
            self.do_claim(name)
        self.do_fail(name)

    @precondition(lambda self: bool(self.model.names_with("failed")))
    @rule(
        data=st.data(),
        mode=st.sampled_from(["keep", "empty", "replace"]),
        keys=st.lists(st.sampled_from(ALPHABET), min_size=1, max_size=2, unique=True),
    )
    def replay(self, data: st.DataObject, mode: str, keys: list[str]) -> None:
        """H1 with the replacement absent (parent's kwargs), {} or a whole new map."""
        name = data.draw(st.sampled_from(self.model.names_with("failed")), label="replay")
        replacement: dict[str, Any] | None = None
        if mode == "empty":
            replacement = {}
        elif mode == "replace":
            replacement = {key: self.value() for key in keys}
        clone = self.model.replay(name, replacement)
        outcome = self.run(self.engine.replay(self.uid, name, replacement))
        assert outcome.instance == name
        assert_outcome(outcome, [], clone=clone)
        self.check()

    @precondition(lambda self: bool(self.model.names_with("failed")))
    @rule(data=st.data(), cascade=st.booleans(), with_result=st.booleans())
    def skip(self, data: st.DataObject, cascade: bool, with_result: bool) -> None:
        """H2, with or without cascade, with a result or the default (null -> {})."""
        name = data.draw(st.sampled_from(self.model.names_with("failed")), label="skip")
        result = {"r": self.value()["v"]} if with_result else None
        expected = self.model.skip(name, cascade, result)
        outcome = self.run(self.engine.skip(self.uid, name, cascade=cascade, result=result))
        assert outcome.instance == name
        assert outcome.cascaded is cascade
        assert_outcome(outcome, expected)
        self.check()

    @precondition(lambda self: any(i.status != "failed" for i in self.model.instances.values()))
    @rule(data=st.data(), operation=st.sampled_from(["replay", "skip"]))
    def refused(self, data: st.DataObject, operation: str) -> None:
        """Replay and skip of an instance that is not failed are refused and change nothing."""
        name = data.draw(
            st.sampled_from(
                [n for n, i in sorted(self.model.instances.items()) if i.status != "failed"]
            ),
            label=operation,
        )
        with pytest.raises(InvalidState):
            if operation == "replay":
                self.model.replay(name)
            else:
                self.model.skip(name, cascade=True)
        with pytest.raises(ConflictError):
            if operation == "replay":
                self.run(self.engine.replay(self.uid, name))
            else:
                self.run(self.engine.skip(self.uid, name, cascade=True))
        self.check()

    # -- shared parts of steps ----------------------------------------------------------------

    def do_configure(self, tasks: dict[str, dict[str, Any]]) -> None:
        try:
            self.model.configure(tasks)
        except RingError:
            with pytest.raises(InvalidError):
                self.run(self.engine.configure(self.uid, {"tasks": tasks}))
        else:
            config = self.run(self.engine.configure(self.uid, {"tasks": tasks}))
            order = [name for name in config.tasks if name not in PADDING]
            assert order == list(self.model.tasks), "configuration order"
            self.check_tasks(config.tasks)
            if self.padding:  # past SCAN_TASKS: the session keeps the index, with its mark
                defs = session_keys(self.uid, self.engine.prefix)[KEY_NAMES.index("defs")]
                assert self.run(self.engine.client.hexists(defs, "##"))
        if self.model.latest or self.model.tasks:
            self.check()

    def do_fire(self, trigger: str) -> None:
        kwargs = self.value()
        expected = self.model.fire(trigger, kwargs)
        outcome = self.run(self.engine.fire(self.uid, trigger, kwargs))
        assert_outcome(outcome, [expected])
        self.check()

    def do_claim(self, name: str) -> None:
        expected = self.model.claim(name)
        claim = self.run(self.engine.claim(self.uid, name))
        assert claim.state == "claimed", claim
        assert claim.token is not None
        assert claim.kwargs == expected, "kwargs received (E1 without withParams, E5)"
        assert claim.instance is not None and claim.instance.status == "running"
        self.tokens[name] = claim.token
        self.check()

    def do_complete(self, name: str, result: dict[str, Any]) -> None:
        expected = self.model.complete(name, result)
        outcome = self.run(self.engine.complete(self.uid, name, self.tokens.pop(name), result))
        assert outcome.instance == name
        assert_outcome(outcome, expected)
        self.check()

    def do_fail(self, name: str) -> None:
        expected = self.model.fail(name)
        token = self.tokens.pop(name)
        outcome = self.run(
            self.engine.fail(self.uid, name, token, "builtins.RuntimeError", "Traceback: boom")
        )
        assert outcome.instance == name
        assert_outcome(outcome, expected)
        self.check()

    # -- the comparison -----------------------------------------------------------------------

    def check_tasks(self, tasks: dict[str, Any]) -> None:
        assert set(tasks) == set(self.model.tasks) | self.padding
        for name, task in self.model.tasks.items():
            stored = tasks[name]
            assert (stored.after, stored.unless, stored.andEvery) == (
                task.after,
                task.unless,
                task.every,
            ), f"stored form of {name} (B9)"

    def check(self) -> None:
        snap = self.run(self.engine.snapshot(self.uid))
        model = self.model
        assert list(snap.instances) == sorted(model.instances, key=instance_order), "names"
        for name, inst in model.instances.items():
            got = snap.instances[name]
            assert got.task == inst.task
            assert got.status == inst.status, f"status of {name}"
            assert got.kwargs == inst.kwargs, f"kwargs of {name}"
            assert sorted(got.abandonState) == sorted(inst.abandon), f"abandonState of {name}"
            assert got.metadata.get("parent") == inst.parent, f"parent of {name}"
            assert int(got.metadata.get("depth") or 0) == inst.depth, f"depth of {name}"
            assert got.metadata.get("result") == inst.result, f"result of {name}"
        assert snap.latestKwargs == model.latest, "latestKwargs"
        self.check_tasks(snap.tasks)
        assert not snap.finalized


def make_machine(
    loop: asyncio.AbstractEventLoop, engine: Engine, padded: bool = False
) -> type[EngineVersusModel]:
    attributes = {"loop": loop, "engine": engine, "padded": padded}
    return type("Machine", (EngineVersusModel,), attributes)


@contextmanager
def engine_on_own_loop(
    connect: Callable[[], Redis | RedisCluster],
) -> Iterator[tuple[asyncio.AbstractEventLoop, Engine]]:
    """An engine (finalize off, fresh key prefix) on a client living in a loop of its own."""
    loop = asyncio.new_event_loop()
    try:
        engine = Engine(connect(), prefix=f"prop-{uuid.uuid4().hex[:12]}", finalize=False)
        loop.run_until_complete(engine.load_scripts())
        try:
            yield loop, engine
        finally:
            loop.run_until_complete(engine.aclose())
    finally:
        loop.close()


def machine_settings(max_examples: int, steps: int) -> settings:
    return settings(
        max_examples=max_examples,
        stateful_step_count=steps,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )


def test_engine_matches_model(redis_url: str) -> None:
    with engine_on_own_loop(lambda: Redis.from_url(redis_url, decode_responses=True)) as (
        loop,
        engine,
    ):
        run_state_machine_as_test(make_machine(loop, engine), settings=machine_settings(150, 40))


def test_engine_with_a_trigger_index_matches_model(redis_url: str) -> None:
    """The same machine on sessions past SCAN_TASKS tasks: their fires and cascades find their
    tasks through the trigger index, which configure keeps, rather than by a scan."""
    with engine_on_own_loop(lambda: Redis.from_url(redis_url, decode_responses=True)) as (
        loop,
        engine,
    ):
        machine = make_machine(loop, engine, padded=True)
        run_state_machine_as_test(machine, settings=machine_settings(60, 40))


def test_engine_matches_model_on_cluster(redis_cluster: RedisClusterServer) -> None:
    url = redis_cluster.url
    with engine_on_own_loop(lambda: RedisCluster.from_url(url, decode_responses=True)) as (
        loop,
        engine,
    ):
        run_state_machine_as_test(make_machine(loop, engine), settings=machine_settings(30, 30))
