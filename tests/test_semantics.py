"""SEMANTICS.md, executable: every worked example (N1-N18) and the numbered rules they leave out.

The examples describe the original's default manager, so they run on ``plain``: the same
backend and key space as ``any_engine`` (standalone Redis and a three-master Redis Cluster) but
without the finalization recipe. The finalization tests (N14, L1) use ``any_engine``, whose
``finalize`` is on, as are the rule tests (they account for ``sessionFinalized`` where it fires).

Conventions of section N: ``P`` returns ``{"kwargs": <what it received>}``, ``N`` returns ``{}``,
``X`` fails with builtins.RuntimeError (tests/support.py); "ran with" is
``metadata.actualKwargs``; all work settles after each step (``step`` fires, then settles).

Service differences (DESIGN.md, API.md) are tested as the service behaves and marked
"Service:" in a comment: an empty ``after`` without ``andEvery`` is refused (N15), retries are
asked with ``engine.retry`` against the task's ``maxRetries`` (G, N13), timestamps are written at
creation and for every status reached (C6), finalization is re-checked after every transition
(L1), and hooks are observed as the ``fires`` of an Outcome (J, N12).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from service.engine import (
    Claim,
    ConflictError,
    Engine,
    FireRecord,
    Instance,
    InvalidError,
    NotFoundError,
    Outcome,
)
from tests.support import Behaviour, settle

FINAL = "sessionFinalized"


@pytest.fixture
async def plain(any_engine: Engine) -> Engine:
    """``any_engine``'s backend and key space with the default manager (no finalization)."""
    engine = Engine(any_engine.client, prefix=any_engine.prefix, finalize=False)
    await engine.load_scripts()
    return engine  # the client is closed by any_engine


# -- helpers -------------------------------------------------------------------------------


async def configure(engine: Engine, uid: str, **tasks: dict[str, Any]) -> None:
    """Merge ``tasks`` into the session's configuration (B1)."""
    await engine.configure(uid, {"tasks": tasks})


async def step(
    engine: Engine,
    uid: str,
    trigger: str,
    kwargs: dict[str, Any] | None = None,
    behaviours: dict[str, Behaviour] | None = None,
) -> Outcome:
    """Fire ``trigger``, then let every scheduled instance run (section N conventions)."""
    outcome = await engine.fire(uid, trigger, kwargs)
    await settle(engine, uid, behaviours)
    return outcome


def fired(trigger: str, scheduled: list[str] | None = None, abandoned: list[str] | None = None):
    """The record of one fire in an Outcome (what a post-fire hook would receive, J1)."""
    return FireRecord(trigger=trigger, scheduled=scheduled or [], abandoned=abandoned or [])


async def statuses(engine: Engine, uid: str) -> dict[str, str]:
    return {instance.name: instance.status for instance in await engine.instances(uid)}


async def names_of(engine: Engine, uid: str, task: str) -> list[str]:
    return [instance.name for instance in await engine.instances(uid, task=task)]


async def unresolved(engine: Engine, uid: str) -> tuple[list[str], list[str]]:
    """Names of the unresolved tasks (K2) and unresolved instances (K1)."""
    tasks, instances = await engine.unresolved(uid)
    return [task.name for task in tasks], [instance.name for instance in instances]


def ran_with(instance: Instance) -> Any:
    return instance.metadata["actualKwargs"]


def p_result(kwargs: dict[str, Any]) -> dict[str, Any]:
    """What a ``P`` task returns, hence its metadata.result and its cascade's kwargs."""
    return {"kwargs": kwargs}


def stamps(instance: Instance) -> set[str]:
    return set(instance.metadata["timestamps"])


def plain_metadata(instance: Instance) -> dict[str, Any]:
    """The metadata without the timestamps."""
    return {key: value for key, value in instance.metadata.items() if key != "timestamps"}


async def token_of(engine: Engine, uid: str, name: str) -> str:
    """Claim ``name`` as a worker would and return the lease token."""
    claim = await engine.claim(uid, name)
    assert claim.state == "claimed" and claim.token, claim
    return claim.token


def recording(log: list[tuple[str, Outcome]]) -> Behaviour:
    """A ``P`` task that also records the Outcome of its completion (its cascade's fires)."""

    async def run(engine: Engine, uid: str, name: str, claim: Claim) -> None:
        assert claim.token is not None
        log.append((name, await engine.complete(uid, name, claim.token, p_result(claim.kwargs))))

    return run


def failing_at(level: int) -> Behaviour:
    """A task that fails after logging at ``level`` (I5)."""

    async def run(engine: Engine, uid: str, name: str, claim: Claim) -> None:
        assert claim.token is not None
        await engine.fail(uid, name, claim.token, "builtins.RuntimeError", "boom", log_level=level)

    return run


def finishing_at(level: int) -> Behaviour:
    """A task that returns {} after logging at ``level`` (I5)."""

    async def run(engine: Engine, uid: str, name: str, claim: Claim) -> None:
        assert claim.token is not None
        await engine.complete(uid, name, claim.token, {}, log_level=level)

    return run


async def retry_until_max(engine: Engine, uid: str, name: str, claim: Claim) -> None:
    """N13's task: asks for a retry while its depth < withParams retries.max, else returns
    ``{"count": depth}``. Service: a retry is ``engine.retry`` (cooldown 0 so settle runs it)."""
    assert claim.token is not None and claim.kwargs is not None and claim.instance is not None
    depth = claim.instance.metadata.get("depth", 0)
    if depth < claim.kwargs["retries"]["max"]:
        await engine.retry(uid, name, claim.token, cooldown=0)
    else:
        await engine.complete(uid, name, claim.token, {"count": depth})


# -- N. Worked examples ----------------------------------------------------------------------


async def test_n1_one_shot_task_ignores_repeat_fires(plain: Engine) -> None:
    """N1 (D5a, D6): without andEvery a task gets one instance; a re-fire only updates latest."""
    engine, uid = plain, "n1:1"
    await configure(engine, uid, t_a={"after": ["S"], "run": "P"})

    await step(engine, uid, "S", {"c": 1})
    first = await engine.instance(uid, "t_a#0")
    assert first.status == "finished"
    assert ran_with(first) == {"S": {"c": 1}}
    assert first.metadata["result"] == p_result({"S": {"c": 1}})

    outcome = await step(engine, uid, "S", {"c": 2})
    assert outcome.fires == [fired("S")]
    assert await names_of(engine, uid, "t_a") == ["t_a#0"]
    assert await engine.instance(uid, "t_a#0") == first
    snapshot = await engine.snapshot(uid)
    assert snapshot.latestKwargs["S"] == {"c": 2}


async def test_n2_and_every_with_empty_after(plain: Engine) -> None:
    """N2 (D4, E1): after [] with andEvery S: every S creates and runs one instance per task;
    withParams merge recursively under the fired kwargs."""
    engine, uid = plain, "n2:1"
    with_params = {"S": {"name": "obs", "status": "clone"}, "extra": {"k": 1}}
    await configure(
        engine,
        uid,
        t_a={"after": [], "andEvery": "S", "run": "P"},
        t_b={"after": [], "andEvery": "S", "run": "P", "withParams": with_params},
    )

    outcome = await step(engine, uid, "S", {"name": "Dolly"})
    assert outcome.fires == [fired("S", ["t_a#0", "t_b#0"])]
    a0, b0 = await engine.instance(uid, "t_a#0"), await engine.instance(uid, "t_b#0")
    assert ran_with(a0) == {"S": {"name": "Dolly"}}
    assert ran_with(b0) == {"S": {"name": "Dolly", "status": "clone"}, "extra": {"k": 1}}

    outcome = await step(engine, uid, "S", {"name": "Dave"})
    assert outcome.fires == [fired("S", ["t_a#1", "t_b#1"])]
    assert await statuses(engine, uid) == {
        "t_a#0": "finished",
        "t_a#1": "finished",
        "t_b#0": "finished",
        "t_b#1": "finished",
    }
    assert ran_with(await engine.instance(uid, "t_a#1")) == {"S": {"name": "Dave"}}
    assert ran_with(await engine.instance(uid, "t_b#1")) == {
        "S": {"name": "Dave", "status": "clone"},
        "extra": {"k": 1},
    }
    assert await engine.instance(uid, "t_a#0") == a0
    assert await engine.instance(uid, "t_b#0") == b0


async def test_n3_pending_and_every_fires_pile_up(plain: Engine) -> None:
    """N3 (D5c, D5d, D7): an unstarted instance lacking the andEvery trigger takes it; a second
    andEvery fire makes a new instance pre-filled with the latest values; one fire of the
    missing trigger is absorbed by all of them."""
    engine, uid = plain, "n3:1"
    await configure(engine, uid, t_c={"after": ["D", "R"], "andEvery": "C", "run": "P"})

    await step(engine, uid, "D", {"d": 1})
    c0 = await engine.instance(uid, "t_c#0")
    assert (c0.status, c0.kwargs) == ("unstarted", {"D": {"d": 1}})

    outcome = await step(engine, uid, "C", {"c": 1})
    assert outcome.fires == [fired("C")]
    assert await names_of(engine, uid, "t_c") == ["t_c#0"]
    assert (await engine.instance(uid, "t_c#0")).kwargs == {"D": {"d": 1}, "C": {"c": 1}}

    outcome = await step(engine, uid, "D", {"d": 2})
    assert outcome.fires == [fired("D")]
    assert await names_of(engine, uid, "t_c") == ["t_c#0"]
    assert (await engine.instance(uid, "t_c#0")).kwargs == {"D": {"d": 1}, "C": {"c": 1}}

    await step(engine, uid, "C", {"c": 2})
    assert await names_of(engine, uid, "t_c") == ["t_c#0", "t_c#1"]
    c1 = await engine.instance(uid, "t_c#1")
    assert (c1.status, c1.kwargs) == ("unstarted", {"D": {"d": 2}, "C": {"c": 2}})
    assert (await engine.instance(uid, "t_c#0")).kwargs == {"D": {"d": 1}, "C": {"c": 1}}

    outcome = await step(engine, uid, "R", {"r": 1})
    assert outcome.fires == [fired("R", ["t_c#0", "t_c#1"])]
    assert await statuses(engine, uid) == {"t_c#0": "finished", "t_c#1": "finished"}
    assert ran_with(await engine.instance(uid, "t_c#0")) == {
        "D": {"d": 1},
        "C": {"c": 1},
        "R": {"r": 1},
    }
    assert ran_with(await engine.instance(uid, "t_c#1")) == {
        "D": {"d": 2},
        "C": {"c": 2},
        "R": {"r": 1},
    }


async def test_n4_first_value_sticks_new_instances_take_the_latest(plain: Engine) -> None:
    """N4 (D6, D7): an instance keeps the first value of a trigger; a new one is pre-filled
    with the latest."""
    engine, uid = plain, "n4:1"
    await configure(engine, uid, t_a={"after": ["C"], "andEvery": "D", "run": "P"})

    await step(engine, uid, "C", {"n": 1})
    a0 = await engine.instance(uid, "t_a#0")
    assert (a0.status, a0.kwargs) == ("unstarted", {"C": {"n": 1}})

    await step(engine, uid, "C", {"n": 2})
    assert await engine.instance(uid, "t_a#0") == a0
    assert await names_of(engine, uid, "t_a") == ["t_a#0"]
    assert (await engine.snapshot(uid)).latestKwargs["C"] == {"n": 2}

    await step(engine, uid, "D", {"n": 3})
    a0 = await engine.instance(uid, "t_a#0")
    assert a0.status == "finished"
    assert ran_with(a0) == {"C": {"n": 1}, "D": {"n": 3}}

    await step(engine, uid, "D", {"n": 4})
    a1 = await engine.instance(uid, "t_a#1")
    assert a1.status == "finished"
    assert a1.kwargs == {"C": {"n": 2}, "D": {"n": 4}}
    assert ran_with(a1) == {"C": {"n": 2}, "D": {"n": 4}}


async def test_n5_and_every_on_the_after_side_of_a_cascade(plain: Engine) -> None:
    """N5 (D5d, F4): andEvery instances waiting for a cascade all absorb it, each keeping its
    own andEvery kwargs."""
    engine, uid = plain, "n5:1"
    await configure(
        engine,
        uid,
        t_a={"after": ["C"], "andEvery": "D", "run": "P"},
        t_c={"after": ["t_a"], "andEvery": "C", "run": "P"},
    )

    await step(engine, uid, "C", {"n": 1})
    assert await statuses(engine, uid) == {"t_a#0": "unstarted", "t_c#0": "unstarted"}
    assert (await engine.instance(uid, "t_a#0")).kwargs == {"C": {"n": 1}}
    assert (await engine.instance(uid, "t_c#0")).kwargs == {"C": {"n": 1}}

    outcome = await step(engine, uid, "C", {"n": 2})
    assert outcome.fires == [fired("C")]
    assert await statuses(engine, uid) == {
        "t_a#0": "unstarted",
        "t_c#0": "unstarted",
        "t_c#1": "unstarted",
    }
    assert (await engine.instance(uid, "t_c#1")).kwargs == {"C": {"n": 2}}
    assert (await engine.instance(uid, "t_a#0")).kwargs == {"C": {"n": 1}}

    ran = await settle(engine, uid)
    assert ran == []
    outcome = await engine.fire(uid, "D", {"n": 3})
    assert outcome.fires == [fired("D", ["t_a#0"])]
    assert await settle(engine, uid) == ["t_a#0", "t_c#0", "t_c#1"]
    a_result = p_result({"C": {"n": 1}, "D": {"n": 3}})
    assert (await engine.instance(uid, "t_a#0")).metadata["result"] == a_result
    assert ran_with(await engine.instance(uid, "t_c#0")) == {"t_a": a_result, "C": {"n": 1}}
    assert ran_with(await engine.instance(uid, "t_c#1")) == {"t_a": a_result, "C": {"n": 2}}
    assert set((await statuses(engine, uid)).values()) == {"finished"}


async def test_n6_unless_needs_the_whole_set_abandon_beats_run(plain: Engine) -> None:
    """N6 (D6, D8): an instance is abandoned only when every unless trigger was absorbed;
    once abandoned it never runs."""
    engine, uid = plain, "n6:1"
    await configure(engine, uid, t={"after": ["D", "F"], "unless": ["E", "W"], "run": "N"})

    await step(engine, uid, "W")
    t0 = await engine.instance(uid, "t#0")
    assert (t0.status, t0.kwargs, t0.abandonState) == ("unstarted", {}, ["W"])

    await step(engine, uid, "F")
    t0 = await engine.instance(uid, "t#0")
    assert (t0.status, t0.kwargs, t0.abandonState) == ("unstarted", {"F": {}}, ["W"])

    outcome = await step(engine, uid, "E")
    assert outcome.fires == [fired("E", abandoned=["t#0"])]
    t0 = await engine.instance(uid, "t#0")
    assert (t0.status, t0.kwargs, t0.abandonState) == ("abandoned", {"F": {}}, ["W", "E"])

    outcome = await step(engine, uid, "D")
    assert outcome.fires == [fired("D")]
    assert await engine.instance(uid, "t#0") == t0
    assert await names_of(engine, uid, "t") == ["t#0"]
    assert "actualKwargs" not in t0.metadata
    assert not stamps(t0) & {"scheduled", "running", "finished"}


async def test_n7_unless_after_a_start_and_prefilled_abandon_state(plain: Engine) -> None:
    """N7 (D7, D15): an unless trigger does not touch a started instance, but a later instance
    is pre-filled with it and abandoned at once."""
    engine, uid = plain, "n7:1"
    await configure(engine, uid, t={"after": ["C"], "andEvery": "S", "unless": ["X"], "run": "N"})

    await engine.fire(uid, "C", {"c": 1})
    outcome = await engine.fire(uid, "S", {"s": 1})
    assert outcome.fires == [fired("S", ["t#0"])]
    assert (await engine.instance(uid, "t#0")).status == "scheduled"
    await settle(engine, uid)
    t0 = await engine.instance(uid, "t#0")
    assert t0.status == "finished"

    outcome = await step(engine, uid, "X")
    assert outcome.fires == [fired("X")]
    assert await engine.instance(uid, "t#0") == t0
    assert await names_of(engine, uid, "t") == ["t#0"]

    outcome = await step(engine, uid, "S", {"s": 2})
    assert outcome.fires == [fired("S", abandoned=["t#1"])]
    t1 = await engine.instance(uid, "t#1")
    assert t1.status == "abandoned"
    assert t1.abandonState == ["X"]
    assert t1.kwargs == {"C": {"c": 1}, "S": {"s": 2}}
    assert await engine.instance(uid, "t#0") == t0


async def test_n8_unless_before_any_start(plain: Engine) -> None:
    """N8 (D4, D5d, D8): andEvery fires pile up while C is missing; one unless fire abandons
    all of them; the late C finds nothing to do."""
    engine, uid = plain, "n8:1"
    await configure(engine, uid, t={"after": ["C"], "andEvery": "S", "unless": ["X"], "run": "N"})

    for i in range(3):
        await step(engine, uid, "S", {"i": i})
    for i in range(3):
        instance = await engine.instance(uid, f"t#{i}")
        assert (instance.status, instance.kwargs) == ("unstarted", {"S": {"i": i}})
        assert instance.abandonState == []
    _, open_instances = await engine.unresolved(uid)
    assert [(i.name, i.waitingFor) for i in open_instances] == [
        ("t#0", ["C"]),
        ("t#1", ["C"]),
        ("t#2", ["C"]),
    ]

    outcome = await step(engine, uid, "X")
    assert outcome.fires == [fired("X", abandoned=["t#0", "t#1", "t#2"])]
    for i in range(3):
        instance = await engine.instance(uid, f"t#{i}")
        assert (instance.status, instance.abandonState) == ("abandoned", ["X"])

    before = await engine.instances(uid)
    outcome = await step(engine, uid, "C")
    assert outcome.fires == [fired("C")]
    assert await engine.instances(uid) == before


async def test_n9_fire_before_configuration(plain: Engine) -> None:
    """N9 (C3, D12, D13, D8): fires into an empty session only record latest kwargs; a later
    relevant fire pre-fills new instances from them (run or abandon on the spot)."""
    engine, uid = plain, "n9:1"
    assert (await engine.fire(uid, "A", {"v": 1})).fires == [fired("A")]
    assert (await engine.fire(uid, "X")).fires == [fired("X")]
    snapshot = await engine.snapshot(uid)
    assert (snapshot.tasks, snapshot.instances) == ({}, {})
    assert snapshot.latestKwargs == {"A": {"v": 1}, "X": {}}

    await configure(
        engine,
        uid,
        t1={"after": ["A", "B"], "run": "P"},
        t2={"after": ["B"], "unless": ["X"], "run": "P"},
    )
    assert (await engine.snapshot(uid)).instances == {}
    tasks, instances = await engine.unresolved(uid)
    assert [(task.name, task.waitingFor) for task in tasks] == [("t1", ["B"]), ("t2", ["B"])]
    assert instances == []

    outcome = await step(engine, uid, "B", {"w": 2})
    assert outcome.fires == [fired("B", ["t1#0"], ["t2#0"])]
    t1 = await engine.instance(uid, "t1#0")
    assert t1.status == "finished"
    assert ran_with(t1) == {"A": {"v": 1}, "B": {"w": 2}}
    t2 = await engine.instance(uid, "t2#0")
    assert (t2.status, t2.abandonState, t2.kwargs) == ("abandoned", ["X"], {"B": {"w": 2}})
    assert "actualKwargs" not in t2.metadata


async def test_n10_recursive_with_params_over_a_cascade_result(plain: Engine) -> None:
    """N10 (E1, E2): withParams add keys inside a cascade result but do not replace its keys."""
    engine, uid = plain, "n10:1"
    with_params = {"t_a": {"foo": "bar", "kwargs": {"hacked": True}}, "pun": {"baz": 1}}
    await configure(
        engine,
        uid,
        t_a={"after": ["D"], "run": "P"},
        t_c={"after": ["t_a"], "run": "P", "withParams": with_params},
    )

    await step(engine, uid, "D")
    a0 = await engine.instance(uid, "t_a#0")
    assert a0.status == "finished"
    assert a0.metadata["result"] == {"kwargs": {"D": {}}}
    c0 = await engine.instance(uid, "t_c#0")
    assert c0.status == "finished"
    assert ran_with(c0) == {
        "t_a": {"foo": "bar", "kwargs": {"D": {}, "hacked": True}},
        "pun": {"baz": 1},
    }


@pytest.mark.parametrize(
    ("replacement", "expected_kwargs", "expected_run"),
    [
        (None, {"go": {"a": 1}}, {"go": {"a": 1}, "cfg": {"k": 1}}),
        ({}, {}, {"cfg": {"k": 1}}),
        (
            {"go": {"b": 2}, "x": {}},
            {"go": {"b": 2}, "x": {}},
            {"go": {"b": 2}, "x": {}, "cfg": {"k": 1}},
        ),
    ],
    ids=["absent", "empty", "replacement"],
)
async def test_n11_replay_kwargs_absent_empty_replacement(
    plain: Engine,
    replacement: dict[str, Any] | None,
    expected_kwargs: dict[str, Any],
    expected_run: dict[str, Any],
) -> None:
    """N11 (H1, B11): the clone runs the task's current definition; its kwargs are the
    parent's (absent), none ({}), or exactly the replacement; withParams still merge."""
    engine, uid = plain, "n11:1"
    task = {"after": ["go"], "run": "X", "withParams": {"cfg": {"k": 1}}}
    await configure(engine, uid, t=task)
    await step(engine, uid, "go", {"a": 1})
    assert (await engine.instance(uid, "t#0")).status == "failed"
    await configure(engine, uid, t={**task, "run": "P"})

    outcome = await engine.replay(uid, "t#0", replacement)
    assert outcome.clone == "t#1"
    assert outcome.scheduled == ["t#1"]
    clone = await engine.instance(uid, "t#1")
    assert clone.kwargs == expected_kwargs
    assert plain_metadata(clone) == {"parent": "t#0", "depth": 1}

    await settle(engine, uid)
    assert await statuses(engine, uid) == {"t#0": "replayed", "t#1": "finished"}
    assert ran_with(await engine.instance(uid, "t#1")) == expected_run
    assert (await engine.snapshot(uid)).latestKwargs["t"] == p_result(expected_run)

    before = await engine.snapshot(uid)
    with pytest.raises(ConflictError):
        await engine.replay(uid, "t#0", replacement)
    assert await engine.snapshot(uid) == before


async def test_n12_skip_with_and_without_cascade(plain: Engine) -> None:
    """N12 (H2, J1, J3): a skip without cascade fires nothing; with cascade it fires the task's
    name with the result. Service: hooks are observed as the Outcome's ``fires``."""
    engine, uid = plain, "n12:1"
    await configure(
        engine,
        uid,
        t_f={"after": [], "andEvery": "fail", "run": "X"},
        t_b={"after": ["t_f"], "run": "P"},
    )

    outcome = await step(engine, uid, "fail")
    assert outcome.fires == [fired("fail", ["t_f#0"])]
    assert (await engine.instance(uid, "t_f#0")).status == "failed"

    outcome = await engine.skip(uid, "t_f#0")
    assert outcome.fires == []
    assert outcome.cascaded is False
    f0 = await engine.instance(uid, "t_f#0")
    assert f0.status == "skipped"
    assert (f0.metadata["cascade"], f0.metadata["result"]) == (False, {})
    assert await names_of(engine, uid, "t_b") == []

    outcome = await step(engine, uid, "fail")
    assert outcome.fires == [fired("fail", ["t_f#1"])]
    assert await statuses(engine, uid) == {"t_f#0": "skipped", "t_f#1": "failed"}

    outcome = await engine.skip(uid, "t_f#1", cascade=True, result={"r": 1})
    assert outcome.fires == [fired("t_f", ["t_b#0"])]
    assert outcome.cascaded is True
    await settle(engine, uid)
    f1 = await engine.instance(uid, "t_f#1")
    assert (f1.status, f1.metadata["cascade"], f1.metadata["result"]) == (
        "skipped",
        True,
        {"r": 1},
    )
    b0 = await engine.instance(uid, "t_b#0")
    assert b0.status == "finished"
    assert ran_with(b0) == {"t_f": {"r": 1}}


@pytest.mark.parametrize("m", [2, 3])
async def test_n13_retry_chain(plain: Engine, m: int) -> None:
    """N13 (G2-G5): each retry leaves the instance replayed and runs a clone (parent, depth+1);
    past the budget (maxRetries 2) the retry request itself fails with MaxRetriesExceeded.
    Service: retries are asked with engine.retry, the budget is the task's maxRetries."""
    engine, uid = plain, f"n13:{m}"
    await configure(
        engine,
        uid,
        t={"after": ["start"], "run": "R", "maxRetries": 2, "withParams": {"retries": {"max": m}}},
    )

    await step(engine, uid, "start", behaviours={"R": retry_until_max})

    snapshot = await engine.snapshot(uid)
    t0, t1, t2 = (snapshot.instances[f"t#{i}"] for i in range(3))
    assert list(snapshot.instances) == ["t#0", "t#1", "t#2"]
    assert (t0.status, t1.status) == ("replayed", "replayed")
    assert "parent" not in t0.metadata and "depth" not in t0.metadata
    assert (t1.metadata["parent"], t1.metadata["depth"]) == ("t#0", 1)
    assert (t2.metadata["parent"], t2.metadata["depth"]) == ("t#1", 2)
    for instance in (t0, t1, t2):
        assert ran_with(instance) == {"start": {}, "retries": {"max": m}}
    if m == 2:
        assert t2.status == "finished"
        assert t2.metadata["result"] == {"count": 2}
        assert "exceptionType" not in t2.metadata
    else:
        assert t2.status == "failed"
        assert t2.metadata["exceptionType"].endswith("MaxRetriesExceeded")
        assert t2.metadata["exceptionContext"] == {"replay_metadata": {"cooldown": 0}}
        assert "result" not in t2.metadata


async def test_n14_finalization_variant_a(any_engine: Engine) -> None:
    """N14 a (L1): once only t_fin is unresolved and it waits for sessionFinalized, the cascade
    of t_b fires it; t_fin runs with {"sessionFinalized": {}}; its own cascade fires nothing."""
    engine, uid = any_engine, "n14:a"
    await configure(
        engine,
        uid,
        t_a={"after": ["start"], "run": "P"},
        t_b={"after": ["t_a"], "run": "P"},
        t_fin={"after": [FINAL], "run": "P"},
    )

    outcome = await engine.fire(uid, "start")
    assert outcome.fires == [fired("start", ["t_a#0"])]
    assert outcome.finalized is False

    log: list[tuple[str, Outcome]] = []
    await settle(engine, uid, {"P": recording(log)})
    assert [(name, o.fires, o.finalized) for name, o in log] == [
        ("t_a#0", [fired("t_a", ["t_b#0"])], False),
        ("t_b#0", [fired("t_b"), fired(FINAL, ["t_fin#0"])], True),
        ("t_fin#0", [fired("t_fin")], False),
    ]
    snapshot = await engine.snapshot(uid)
    assert snapshot.finalized is True
    assert snapshot.latestKwargs[FINAL] == {}
    assert ran_with(snapshot.instances["t_fin#0"]) == {FINAL: {}}
    assert {name: i.status for name, i in snapshot.instances.items()} == {
        "t_a#0": "finished",
        "t_b#0": "finished",
        "t_fin#0": "finished",
    }


async def test_n14_finalization_variant_b(any_engine: Engine) -> None:
    """N14 b (L1, K2): a task whose trigger never fires (t_never) is an unresolved task that
    does not wait for sessionFinalized: the session is never finalized."""
    engine, uid = any_engine, "n14:b"
    await configure(
        engine,
        uid,
        t_a={"after": ["start"], "run": "P"},
        t_b={"after": ["t_a"], "run": "P"},
        t_fin={"after": [FINAL], "run": "P"},
        t_never={"after": ["nope"], "run": "P"},
    )

    outcome = await engine.fire(uid, "start")
    assert (outcome.fires, outcome.finalized) == ([fired("start", ["t_a#0"])], False)
    log: list[tuple[str, Outcome]] = []
    await settle(engine, uid, {"P": recording(log)})
    assert [(name, o.fires, o.finalized) for name, o in log] == [
        ("t_a#0", [fired("t_a", ["t_b#0"])], False),
        ("t_b#0", [fired("t_b")], False),
    ]
    outcome = await step(engine, uid, "unrelated")
    assert (outcome.fires, outcome.finalized) == ([fired("unrelated")], False)

    snapshot = await engine.snapshot(uid)
    assert snapshot.finalized is False
    assert FINAL not in snapshot.latestKwargs
    assert await names_of(engine, uid, "t_fin") == []
    assert await unresolved(engine, uid) == (["t_fin", "t_never"], [])


async def test_n15_empty_after_without_and_every_is_refused(plain: Engine) -> None:
    """N15 (I3, D4). Service: API.md refuses an empty ``after`` without ``andEvery`` (such a
    task could never be created by its after side), so t, u and v cannot be configured; the
    update fails as a whole (B2) and nothing is saved."""
    engine, uid = plain, "n15:1"
    refused = {
        "t": {"after": [], "unless": ["X", "Y"], "run": "P"},
        "u": {"after": [], "unless": ["X"], "run": "P"},
        "v": {"after": [], "run": "P"},
    }
    for name, task in refused.items():
        with pytest.raises(InvalidError):
            await configure(engine, uid, **{name: task})
    with pytest.raises(InvalidError):
        await configure(engine, uid, ok={"after": ["Z"], "run": "P"}, **refused)
    with pytest.raises(NotFoundError):
        await engine.get_config(uid)


async def test_n15_unless_creates_the_instance_variant(plain: Engine) -> None:
    """N15 as the service can express it (D4, I3, K2): with after ["Z"], a fire of an unless
    trigger still creates the instance (partial unless: waits; complete unless: abandoned at
    once); a task not relevant gets no instance and stays an unresolved task. When Z fires,
    the waiting instance runs; the abandoned one never does."""
    engine, uid = plain, "n15:2"
    await configure(
        engine,
        uid,
        t={"after": ["Z"], "unless": ["X", "Y"], "run": "P"},
        u={"after": ["Z"], "unless": ["X"], "run": "P"},
        v={"after": ["Z"], "run": "P"},
    )

    outcome = await step(engine, uid, "X")
    assert outcome.fires == [fired("X", abandoned=["u#0"])]
    t0 = await engine.instance(uid, "t#0")
    assert (t0.status, t0.abandonState, t0.kwargs) == ("unstarted", ["X"], {})
    u0 = await engine.instance(uid, "u#0")
    assert (u0.status, u0.abandonState) == ("abandoned", ["X"])
    assert await names_of(engine, uid, "v") == []
    assert await unresolved(engine, uid) == (["t", "v"], ["t#0"])

    outcome = await step(engine, uid, "Z")
    assert outcome.fires == [fired("Z", ["t#0", "v#0"])]
    assert ran_with(await engine.instance(uid, "t#0")) == {"Z": {}}
    assert await statuses(engine, uid) == {"t#0": "finished", "u#0": "abandoned", "v#0": "finished"}


async def test_n16_re_evaluation_after_a_redefinition(plain: Engine) -> None:
    """N16 (B11, D3, D14): a redefinition changes nothing by itself; a trigger no longer used
    is not relevant; the next relevant fire dispatches the now runnable instance although it
    does not absorb that fire."""
    engine, uid = plain, "n16:1"
    await configure(engine, uid, t={"after": ["A", "B"], "run": "P"})

    await step(engine, uid, "A", {"n": 1})
    t0 = await engine.instance(uid, "t#0")
    assert (t0.status, t0.kwargs) == ("unstarted", {"A": {"n": 1}})

    await configure(engine, uid, t={"after": ["A"], "run": "P"})
    assert await engine.instance(uid, "t#0") == t0

    outcome = await step(engine, uid, "B")
    assert outcome.fires == [fired("B")]
    assert await engine.instance(uid, "t#0") == t0

    outcome = await step(engine, uid, "A", {"n": 2})
    assert outcome.fires == [fired("A", ["t#0"])]
    t0 = await engine.instance(uid, "t#0")
    assert t0.status == "finished"
    assert t0.kwargs == {"A": {"n": 1}}
    assert ran_with(t0) == {"A": {"n": 1}}
    assert await names_of(engine, uid, "t") == ["t#0"]


async def test_n17_unresolved_tasks_vs_instances(plain: Engine) -> None:
    """N17 (K1, K2): a task is unresolved while it has no instance or an unresolved one;
    instances while unstarted, scheduled, running or failed."""
    engine, uid = plain, "n17:1"
    await configure(
        engine,
        uid,
        t_a={"after": ["D"], "run": "X"},
        t_b={"after": ["t_a"], "run": "P"},
        t_c={"after": ["D", "R"], "run": "P"},
    )
    assert await unresolved(engine, uid) == (["t_a", "t_b", "t_c"], [])

    await step(engine, uid, "D")
    assert await unresolved(engine, uid) == (["t_a", "t_b", "t_c"], ["t_a#0", "t_c#0"])
    assert await statuses(engine, uid) == {"t_a#0": "failed", "t_c#0": "unstarted"}

    await engine.skip(uid, "t_a#0")
    assert await unresolved(engine, uid) == (["t_b", "t_c"], ["t_c#0"])

    await step(engine, uid, "R")
    assert await unresolved(engine, uid) == (["t_b"], [])
    assert (await engine.instance(uid, "t_c#0")).status == "finished"


async def test_n18_manual_status_update_with_cascade(plain: Engine) -> None:
    """N18 (H3): any status can be set by hand; metadata merges (failure metadata kept); the
    cascade fires with cascadeKwargs whatever the status."""
    engine, uid = plain, "n18:1"
    await configure(
        engine, uid, t_a={"after": ["go"], "run": "X"}, t_b={"after": ["t_a"], "run": "P"}
    )

    await step(engine, uid, "go")
    a0 = await engine.instance(uid, "t_a#0")
    assert a0.status == "failed"
    assert a0.metadata["exceptionType"] == "builtins.RuntimeError"

    outcome = await engine.set_status(
        uid, "t_a#0", "finished", metadata={"note": "manual"}, cascade=True, cascade_kwargs={"x": 1}
    )
    assert outcome.fires == [fired("t_a", ["t_b#0"])]
    await settle(engine, uid)
    a0 = await engine.instance(uid, "t_a#0")
    assert a0.status == "finished"
    assert a0.metadata["exceptionType"] == "builtins.RuntimeError"
    assert a0.metadata["note"] == "manual"
    assert "finished" in stamps(a0)
    b0 = await engine.instance(uid, "t_b#0")
    assert b0.status == "finished"
    assert ran_with(b0) == {"t_a": {"x": 1}}


# -- B. Task configuration -------------------------------------------------------------------


async def test_b1_merge_replaces_named_tasks_whole_and_keeps_the_others(any_engine: Engine) -> None:
    """B1, D13: an update replaces each named task as a whole, keeps the tasks not named, and
    creates no instance nor applies an earlier fire. (PUT, replace=True, is the service's
    whole-configuration replacement.)"""
    engine, uid = any_engine, "b1:1"
    await engine.fire(uid, "S", {"early": True})
    await configure(
        engine,
        uid,
        t_a={"after": ["S"], "run": "P"},
        t_b={"after": ["S"], "unless": ["X"], "run": "N", "withParams": {"p": {"q": 1}}, "k": 1},
    )
    config = await engine.configure(uid, {"tasks": {"t_b": {"after": ["T"], "run": "P"}}})

    assert list(config.tasks) == ["t_a", "t_b"]
    assert config.tasks["t_a"].after == ["S"]
    t_b = config.tasks["t_b"]
    assert (t_b.after, t_b.unless, t_b.run, t_b.withParams) == (["T"], [], "P", {})
    assert t_b.model_extra == {}
    assert await engine.get_config(uid) == config
    assert (await engine.snapshot(uid)).instances == {}

    config = await engine.configure(uid, {"tasks": {"t_a": {"after": ["U"], "run": "N"}}})
    assert list(config.tasks) == ["t_a", "t_b"]  # a replaced task keeps its place (D4 order)
    assert (config.tasks["t_a"].after, config.tasks["t_b"].after) == (["U"], ["T"])

    # Service: PUT replaces the whole configuration (API.md).
    config = await engine.configure(
        uid, {"tasks": {"t_c": {"after": ["S"], "run": "P"}}}, replace=True
    )
    assert list(config.tasks) == ["t_c"]


async def test_b2_b4_b6_b8_configuration_refusals_save_nothing(any_engine: Engine) -> None:
    """B2 (missing after fails the whole update), B4 (andEvery list), B8 ('name' key); and the
    service's refusals (B2/B6 service note): a string ``after``, a non-object withParams
    entry. Each leaves the configuration as it was."""
    engine, uid = any_engine, "b2:1"
    await configure(engine, uid, t_ok={"after": ["A"], "run": "P"})
    before = await engine.get_config(uid)
    bad_tasks = [
        {"run": "P"},
        {"after": "abc", "run": "P"},
        {"after": ["A"]},
        {"after": ["A"], "andEvery": ["S"], "run": "P"},
        {"after": ["A"], "run": "P", "name": "t"},
        {"after": ["A"], "run": "P", "withParams": {"k": 1}},
        {"after": ["A"], "run": "P", "withParams": [1]},
    ]
    for bad in bad_tasks:
        with pytest.raises(InvalidError):
            await configure(engine, uid, t_new={"after": ["B"], "run": "P"}, t_bad=bad)
    assert await engine.get_config(uid) == before


async def test_b2_b4_after_is_a_set_and_empty_and_every_is_absent(any_engine: Engine) -> None:
    """B2: order and duplicates of ``after`` do not matter; B4: andEvery "" or null is absent."""
    engine, uid = any_engine, "b2:2"
    config = await engine.configure(
        uid,
        {
            "tasks": {
                "t_dup": {"after": ["A", "A", "B"], "run": "P"},
                "t_empty": {"after": ["A"], "andEvery": "", "run": "P"},
                "t_null": {"after": ["A"], "andEvery": None, "run": "P"},
            }
        },
    )
    assert sorted(config.tasks["t_dup"].after) == ["A", "B"]
    for name in ("t_empty", "t_null"):
        assert (config.tasks[name].andEvery, config.tasks[name].after) == (None, ["A"])
    await step(engine, uid, "B")
    await step(engine, uid, "A")
    await step(engine, uid, "A")
    assert await statuses(engine, uid) == {
        "t_dup#0": "finished",
        "t_empty#0": "finished",
        "t_null#0": "finished",
    }


async def test_b8_b9_stored_form_with_custom_directives(any_engine: Engine) -> None:
    """B8, B9: the stored form has after (andEvery included), unless, andEvery, run, using,
    withParams (+ maxRetries, service) and the custom keys unchanged; re-loading the stored
    form re-adds andEvery idempotently."""
    engine, uid = any_engine, "b9:1"
    custom = {"priority": 5, "labels": {"team": ["a", "b"]}}
    config = await engine.configure(
        uid,
        {
            "tasks": {
                "t": {
                    "after": ["A"],
                    "andEvery": "S",
                    "unless": ["X"],
                    "run": "app.T",
                    "withParams": {"A": {"k": 1}},
                    **custom,
                }
            }
        },
    )
    stored = {
        "after": ["A", "S"],
        "unless": ["X"],
        "andEvery": "S",
        "run": "app.T",
        "using": "dramatiq",  # Service: the default runner key (the original stores null)
        "withParams": {"A": {"k": 1}},
        "maxRetries": 3,  # Service: G2's budget as a task property
        **custom,
    }
    assert config.tasks["t"].model_dump() == stored
    assert (await engine.snapshot(uid)).tasks["t"].model_dump() == stored
    assert (await engine.get_config(uid)).tasks["t"].model_dump() == stored

    again = await engine.configure(uid, {"tasks": {"t": stored}})
    assert again.tasks["t"].model_dump() == stored


async def test_b11_redefinition_affects_existing_instances(any_engine: Engine) -> None:
    """B11, E4, D8: instances follow their task's current definition: a changed unless can
    abandon an existing instance, a changed withParams is used at dispatch."""
    engine, uid = any_engine, "b11:1"
    await configure(engine, uid, t={"after": ["A", "B"], "unless": ["X", "Y"], "run": "P"})
    await step(engine, uid, "A")
    await step(engine, uid, "X")
    assert (await engine.instance(uid, "t#0")).abandonState == ["X"]

    await configure(engine, uid, t={"after": ["A", "B"], "unless": ["X"], "run": "P"})
    assert (await engine.instance(uid, "t#0")).status == "unstarted"
    outcome = await step(engine, uid, "B")
    assert outcome.fires[0] == fired("B", abandoned=["t#0"])
    assert (await engine.instance(uid, "t#0")).status == "abandoned"

    uid = "b11:2"
    await configure(engine, uid, u={"after": ["A"], "run": "P", "withParams": {"w": {"v": 1}}})
    assert (await engine.fire(uid, "A")).fires[0] == fired("A", ["u#0"])
    await configure(engine, uid, u={"after": ["A"], "run": "P", "withParams": {"w": {"v": 2}}})
    await settle(engine, uid)
    assert ran_with(await engine.instance(uid, "u#0")) == {"A": {}, "w": {"v": 2}}


# -- C. Session state ------------------------------------------------------------------------


async def test_c3_d1_every_fire_records_latest_kwargs(any_engine: Engine) -> None:
    """C3, D1, D12: latest kwargs are written by every fire: into an unconfigured session,
    fires matching no task, cascades; absent kwargs are {}; the latest value wins."""
    engine, uid = any_engine, "c3:1"
    await engine.fire(uid, "early", None)
    await configure(engine, uid, t_a={"after": ["go"], "run": "P"})
    await step(engine, uid, "nobody", {"n": 1})
    await step(engine, uid, "nobody", {"n": 2})
    await step(engine, uid, "go", {"g": 1})
    latest = (await engine.snapshot(uid)).latestKwargs
    assert latest["early"] == {}
    assert latest["nobody"] == {"n": 2}
    assert latest["go"] == {"g": 1}
    assert latest["t_a"] == p_result({"go": {"g": 1}})


async def test_c8_snapshot_after_a_first_fire(plain: Engine) -> None:
    """C8: the snapshot illustration. Service: the instance has timestamps from its creation
    (created, lastModified, unstarted), a deliberate fix of C6."""
    engine, uid = plain, "c8:1"
    await configure(engine, uid, t_s={"after": ["first", "done"], "run": "app.S"})
    await engine.fire(uid, "first", {"p": 1})
    snapshot = await engine.snapshot(uid)
    assert list(snapshot.tasks) == ["t_s"]
    assert (snapshot.tasks["t_s"].after, snapshot.tasks["t_s"].unless) == (["first", "done"], [])
    instance = snapshot.instances["t_s#0"]
    assert (instance.task, instance.status) == ("t_s", "unstarted")
    assert (instance.kwargs, instance.abandonState) == ({"first": {"p": 1}}, [])
    assert plain_metadata(instance) == {}
    assert stamps(instance) == {"created", "lastModified", "unstarted"}
    assert snapshot.latestKwargs == {"first": {"p": 1}}
    assert snapshot.finalized is False


async def test_c4_fire_replay_and_retry_clones_share_the_counter(any_engine: Engine) -> None:
    """C4: T#n with n = instances of T so far, dense, never reused, shared by fire-created
    instances, replay clones and retry clones. G6 (service): a retry clone with a cooldown is
    not claimed before it is due."""
    engine, uid = any_engine, "c4:1"
    await configure(engine, uid, t={"after": [], "andEvery": "S", "run": "X"})
    await step(engine, uid, "S")
    await step(engine, uid, "S")
    assert await statuses(engine, uid) == {"t#0": "failed", "t#1": "failed"}

    outcome = await engine.replay(uid, "t#0")
    assert outcome.clone == "t#2"
    await settle(engine, uid)

    assert (await engine.fire(uid, "S")).fires[0] == fired("S", ["t#3"])
    retry = await engine.retry(uid, "t#3", await token_of(engine, uid, "t#3"), cooldown=60)
    assert (retry.retried, retry.clone) == (True, "t#4")
    claim = await engine.claim(uid, "t#4")
    assert claim.state == "not_due"
    assert claim.wait is not None and 0 < claim.wait <= 60_000

    assert (await engine.fire(uid, "S")).fires[0] == fired("S", ["t#5"])
    await settle(engine, uid)
    assert await statuses(engine, uid) == {
        "t#0": "replayed",
        "t#1": "failed",
        "t#2": "failed",
        "t#3": "replayed",
        "t#4": "scheduled",
        "t#5": "failed",
    }
    assert (await engine.instance(uid, "t#2")).metadata["parent"] == "t#0"
    assert (await engine.instance(uid, "t#4")).metadata["parent"] == "t#3"


# -- D. Firing -------------------------------------------------------------------------------


async def test_d6_first_value_wins_and_a_trigger_in_both_lists(any_engine: Engine) -> None:
    """D6: an instance absorbs a trigger once (first value wins, abandonState has no
    duplicates); a trigger in both after and unless is absorbed into both; D8: when after and
    unless are both complete, abandon wins."""
    engine, uid = any_engine, "d6:1"
    await configure(
        engine,
        uid,
        t={"after": ["A", "B"], "unless": ["X", "Y"], "run": "P"},
        both={"after": ["Q", "R"], "unless": ["Q", "W"], "run": "P"},
        win={"after": ["K"], "unless": ["K"], "run": "P"},
    )
    await step(engine, uid, "A", {"v": 1})
    await step(engine, uid, "A", {"v": 2})
    await step(engine, uid, "X", {"x": 1})
    await step(engine, uid, "X", {"x": 2})
    t0 = await engine.instance(uid, "t#0")
    assert (t0.kwargs, t0.abandonState) == ({"A": {"v": 1}}, ["X"])

    await step(engine, uid, "Q", {"q": 1})
    both = await engine.instance(uid, "both#0")
    assert (both.status, both.kwargs, both.abandonState) == ("unstarted", {"Q": {"q": 1}}, ["Q"])

    outcome = await step(engine, uid, "K")
    assert outcome.fires[0] == fired("K", abandoned=["win#0"])
    win = await engine.instance(uid, "win#0")
    assert (win.status, win.kwargs, win.abandonState) == ("abandoned", {"K": {}}, ["K"])


async def test_d7_prefill_from_latest_kwargs(any_engine: Engine) -> None:
    """D7: a new instance is pre-filled with the latest value of every other after trigger and
    with every other unless trigger that has fired; existing instances are not back-filled
    (D13)."""
    engine, uid = any_engine, "d7:1"
    await engine.fire(uid, "A", {"v": 1})
    await engine.fire(uid, "X", {"secret": 1})
    await configure(
        engine, uid, t={"after": ["A", "B"], "andEvery": "S", "unless": ["X", "Y"], "run": "P"}
    )

    await step(engine, uid, "S", {"s": 1})
    t0 = await engine.instance(uid, "t#0")
    assert (t0.status, t0.kwargs, t0.abandonState) == (
        "unstarted",
        {"A": {"v": 1}, "S": {"s": 1}},
        ["X"],
    )

    await step(engine, uid, "A", {"v": 2})
    assert (await engine.instance(uid, "t#0")).kwargs["A"] == {"v": 1}
    await step(engine, uid, "S", {"s": 2})
    t1 = await engine.instance(uid, "t#1")
    assert (t1.kwargs, t1.abandonState) == ({"A": {"v": 2}, "S": {"s": 2}}, ["X"])

    outcome = await step(engine, uid, "B", {"b": 1})
    assert outcome.fires[0] == fired("B", ["t#0", "t#1"])
    # E3: unless kwargs are never delivered
    assert ran_with(await engine.instance(uid, "t#0")) == {
        "A": {"v": 1},
        "B": {"b": 1},
        "S": {"s": 1},
    }
    assert ran_with(await engine.instance(uid, "t#1")) == {
        "A": {"v": 2},
        "B": {"b": 1},
        "S": {"s": 2},
    }


async def test_d13_existing_instances_are_never_back_filled(any_engine: Engine) -> None:
    """D13: a trigger added to a task's after after it fired is absorbed only if it fires
    again."""
    engine, uid = any_engine, "d13:1"
    await configure(engine, uid, t={"after": ["A", "B"], "run": "P"})
    await step(engine, uid, "A")
    await step(engine, uid, "C", {"c": 1})
    await configure(engine, uid, t={"after": ["A", "B", "C"], "run": "P"})

    await step(engine, uid, "B")
    t0 = await engine.instance(uid, "t#0")
    assert (t0.status, t0.kwargs) == ("unstarted", {"A": {}, "B": {}})
    _, instances = await engine.unresolved(uid)
    assert [(i.name, i.waitingFor) for i in instances] == [("t#0", ["C"])]

    await step(engine, uid, "C", {"c": 2})
    t0 = await engine.instance(uid, "t#0")
    assert t0.status == "finished"
    assert ran_with(t0) == {"A": {}, "B": {}, "C": {"c": 2}}


async def test_d14_h3_back_to_unstarted_is_evaluated_at_the_next_relevant_fire(
    any_engine: Engine,
) -> None:
    """H3, D14: putting an instance back to unstarted makes it run again at the next fire
    relevant to its task (not at an unrelated one), with the kwargs it holds."""
    engine, uid = any_engine, "d14:1"
    await configure(engine, uid, t={"after": ["A", "B"], "run": "P"})
    await step(engine, uid, "A", {"a": 1})
    await step(engine, uid, "B", {"b": 1})
    assert (await engine.instance(uid, "t#0")).status == "finished"

    outcome = await engine.set_status(uid, "t#0", "unstarted")
    assert outcome.fires == []
    outcome = await step(engine, uid, "unrelated")
    assert outcome.fires[0] == fired("unrelated")
    assert (await engine.instance(uid, "t#0")).status == "unstarted"

    outcome = await step(engine, uid, "A", {"a": 2})
    assert outcome.fires[0] == fired("A", ["t#0"])
    t0 = await engine.instance(uid, "t#0")
    assert t0.status == "finished"
    assert ran_with(t0) == {"A": {"a": 1}, "B": {"b": 1}}
    assert await names_of(engine, uid, "t") == ["t#0"]


async def test_d15_unless_does_not_touch_scheduled_or_running_instances(
    any_engine: Engine,
) -> None:
    """D15, M14: instances not unstarted are never changed by a fire: an unless trigger after
    the instance was scheduled (or started) neither abandons nor cancels it."""
    engine, uid = any_engine, "d15:1"
    await configure(
        engine,
        uid,
        t={"after": ["A"], "unless": ["X"], "run": "N"},
        r={"after": ["A"], "unless": ["X"], "run": "N"},
    )
    await engine.fire(uid, "A")
    token = await token_of(engine, uid, "r#0")
    scheduled, running = await engine.instance(uid, "t#0"), await engine.instance(uid, "r#0")
    assert (scheduled.status, running.status) == ("scheduled", "running")

    outcome = await engine.fire(uid, "X")
    assert outcome.fires[0] == fired("X")
    assert await engine.instance(uid, "t#0") == scheduled
    assert await engine.instance(uid, "r#0") == running

    await engine.complete(uid, "r#0", token, {})
    await settle(engine, uid)
    assert await statuses(engine, uid) == {"r#0": "finished", "t#0": "finished"}


# -- E. What a task receives -----------------------------------------------------------------


async def test_e1_e2_e3_recursive_merge(any_engine: Engine) -> None:
    """E1, E2: withParams as base, instance kwargs on top, objects merged recursively, other
    values (lists, scalars) replaced; withParams keys need not be triggers. E3: unless kwargs
    are never delivered."""
    engine, uid = any_engine, "e1:1"
    with_params = {
        "A": {"x": 1, "deep": {"p": 1, "q": 2}, "list": [1, 2], "obj": {"o": 1}},
        "extra": {"k": 1},
    }
    await configure(
        engine,
        uid,
        t={"after": ["A"], "unless": ["X", "Y"], "run": "P", "withParams": with_params},
    )
    await step(engine, uid, "X", {"secret": True})
    await step(engine, uid, "A", {"deep": {"q": 3, "r": 4}, "list": [9], "obj": 5, "y": 2})
    assert ran_with(await engine.instance(uid, "t#0")) == {
        "A": {"x": 1, "deep": {"p": 1, "q": 3, "r": 4}, "list": [9], "obj": 5, "y": 2},
        "extra": {"k": 1},
    }


async def test_e5_start_records_running_and_actual_kwargs(any_engine: Engine) -> None:
    """E5: when the task starts its status is running and metadata.actualKwargs is exactly the
    object it receives."""
    engine, uid = any_engine, "e5:1"
    await configure(engine, uid, t={"after": ["A"], "run": "P", "withParams": {"w": {"v": 1}}})
    await engine.fire(uid, "A", {"a": 1})
    claim = await engine.claim(uid, "t#0")
    assert claim.kwargs == {"A": {"a": 1}, "w": {"v": 1}}
    t0 = await engine.instance(uid, "t#0")
    assert t0.status == "running"
    assert ran_with(t0) == claim.kwargs
    assert {"scheduled", "running"} <= stamps(t0)


# -- F. Execution outcomes -------------------------------------------------------------------


async def test_f2_f3_f4_success_cascades_failure_does_not(any_engine: Engine) -> None:
    """F2, F4: success stores result and logLevel and fires the task's name with the result.
    F3: failure stores exceptionType, exceptionInfo, exceptionContext and logLevel, no
    cascade."""
    engine, uid = any_engine, "f2:1"
    await configure(
        engine,
        uid,
        ok={"after": ["go"], "run": "P"},
        ko={"after": ["go"], "run": "P"},
        after_ok={"after": ["ok"], "run": "P"},
        after_ko={"after": ["ko"], "run": "P"},
    )
    await engine.fire(uid, "go")
    done = await engine.complete(
        uid, "ok#0", await token_of(engine, uid, "ok#0"), {"r": [1, 2]}, log_level=20
    )
    assert done.fires[0] == fired("ok", ["after_ok#0"])
    failed = await engine.fail(
        uid,
        "ko#0",
        await token_of(engine, uid, "ko#0"),
        "builtins.ValueError",
        "Traceback ...",
        {"why": "bad"},
        log_level=40,
    )
    assert failed.fires == []
    await settle(engine, uid)

    ok = await engine.instance(uid, "ok#0")
    assert (ok.status, ok.metadata["result"], ok.metadata["logLevel"]) == (
        "finished",
        {"r": [1, 2]},
        20,
    )
    assert ran_with(await engine.instance(uid, "after_ok#0")) == {"ok": {"r": [1, 2]}}
    ko = await engine.instance(uid, "ko#0")
    assert ko.status == "failed"
    assert {key: ko.metadata[key] for key in ("exceptionType", "exceptionInfo")} == {
        "exceptionType": "builtins.ValueError",
        "exceptionInfo": "Traceback ...",
    }
    assert (ko.metadata["exceptionContext"], ko.metadata["logLevel"]) == ({"why": "bad"}, 40)
    assert "result" not in ko.metadata
    assert await names_of(engine, uid, "after_ko") == []
    assert "ko" not in (await engine.snapshot(uid)).latestKwargs


async def test_f6_f7_task_chooses_its_status(any_engine: Engine) -> None:
    """F6, F7: a running task may end in a status of its choice with metadata merged: no
    cascade, no result, no logLevel. Service: set_status with the lease token."""
    engine, uid = any_engine, "f6:1"
    await configure(engine, uid, t={"after": ["go"], "run": "P"}, d={"after": ["t"], "run": "P"})
    await engine.fire(uid, "go")
    token = await token_of(engine, uid, "t#0")
    outcome = await engine.set_status(
        uid, "t#0", "skipped", metadata={"reason": "nothing to do"}, token=token
    )
    assert outcome.fires == []
    t0 = await engine.instance(uid, "t#0")
    assert t0.status == "skipped"
    assert t0.metadata["reason"] == "nothing to do"
    assert "result" not in t0.metadata and "logLevel" not in t0.metadata
    assert await names_of(engine, uid, "d") == []


# -- G. Retry requested by the task ----------------------------------------------------------


async def test_g3_g5_retry_metadata_on_parent_only(any_engine: Engine) -> None:
    """G3: the parent ends failed then replayed with the given metadata, the cooldown and the
    cause; G5: the clone has only parent and depth (no earlier exception or result); G7: the
    replacement kwargs replace the whole map."""
    engine, uid = any_engine, "g3:1"
    await configure(engine, uid, t={"after": ["go"], "run": "P"})
    await engine.fire(uid, "go", {"g": 1})
    outcome = await engine.retry(
        uid,
        "t#0",
        await token_of(engine, uid, "t#0"),
        cooldown=0,
        kwargs={"other": {"o": 1}},
        metadata={"why": "busy"},
        cause=("app.Busy", "Traceback busy", {"c": 1}),
    )
    assert (outcome.retried, outcome.clone) == (True, "t#1")

    parent = await engine.instance(uid, "t#0")
    assert parent.status == "replayed"
    assert {"failed", "replayed"} <= stamps(parent)
    assert parent.metadata["why"] == "busy"
    assert parent.metadata["cooldown"] == 0
    assert parent.metadata["exceptionType"] == "app.Busy"
    assert parent.metadata["exceptionInfo"] == "Traceback busy"
    assert parent.metadata["exceptionContext"] == {"c": 1}
    clone = await engine.instance(uid, "t#1")
    assert clone.status == "scheduled"
    assert clone.kwargs == {"other": {"o": 1}}
    assert plain_metadata(clone) == {"parent": "t#0", "depth": 1}

    await settle(engine, uid)
    clone = await engine.instance(uid, "t#1")
    assert clone.status == "finished"
    assert ran_with(clone) == {"other": {"o": 1}}
    assert "exceptionType" not in clone.metadata and "why" not in clone.metadata


async def test_g4_operator_replays_use_up_the_retry_budget(any_engine: Engine) -> None:
    """G4, G2: depth grows with operator replays too; a retry asked at depth >= maxRetries
    fails with MaxRetriesExceeded and replay_metadata."""
    engine, uid = any_engine, "g4:1"
    await configure(engine, uid, t={"after": ["go"], "run": "X", "maxRetries": 2})
    await step(engine, uid, "go")
    await engine.replay(uid, "t#0")
    await settle(engine, uid)
    await engine.replay(uid, "t#1")
    t2 = await engine.instance(uid, "t#2")
    assert plain_metadata(t2) == {"parent": "t#1", "depth": 2}

    outcome = await engine.retry(
        uid, "t#2", await token_of(engine, uid, "t#2"), cooldown=5, metadata={"m": 1}
    )
    assert outcome.retried is False
    assert outcome.clone is None
    t2 = await engine.instance(uid, "t#2")
    assert t2.status == "failed"
    assert t2.metadata["exceptionType"].endswith("MaxRetriesExceeded")
    assert t2.metadata["exceptionContext"] == {"replay_metadata": {"m": 1, "cooldown": 5}}
    assert await names_of(engine, uid, "t") == ["t#0", "t#1", "t#2"]


# -- H. Operator operations ------------------------------------------------------------------


async def test_h1_replay_clone_record_and_refusals(any_engine: Engine) -> None:
    """H1: unknown name: not found; not failed: conflict and nothing changes. Otherwise the
    parent is replayed (service: with a timestamp) and the clone (next number, abandonState
    copied, kwargs as given, metadata parent and depth only) is dispatched at once without
    can_run or can_abandon checks; no post-fire."""
    engine, uid = any_engine, "h1:1"
    await configure(engine, uid, t={"after": ["go", "more"], "unless": ["X"], "run": "P"})
    await step(engine, uid, "X")
    assert (await engine.instance(uid, "t#0")).status == "abandoned"

    with pytest.raises(NotFoundError):
        await engine.replay(uid, "t#9")
    before = await engine.snapshot(uid)
    with pytest.raises(ConflictError):
        await engine.replay(uid, "t#0")
    assert await engine.snapshot(uid) == before

    await engine.set_status(uid, "t#0", "failed")
    outcome = await engine.replay(uid, "t#0", {})
    assert outcome.fires == []
    assert outcome.clone == "t#1"
    parent = await engine.instance(uid, "t#0")
    assert parent.status == "replayed"
    assert "replayed" in stamps(parent)  # Service: C6 fix, every status reached is stamped
    clone = await engine.instance(uid, "t#1")
    assert (clone.status, clone.kwargs, clone.abandonState) == ("scheduled", {}, ["X"])
    assert plain_metadata(clone) == {"parent": "t#0", "depth": 1}
    await settle(engine, uid)
    clone = await engine.instance(uid, "t#1")
    assert clone.status == "finished"
    assert ran_with(clone) == {}


async def test_h2_skip_keeps_failure_metadata(any_engine: Engine) -> None:
    """H2: skip needs a failed instance (conflict otherwise, not found for an unknown one);
    it keeps the failure metadata, stores cascade and result (even without cascade, null
    result is {}), and fires nothing without cascade."""
    engine, uid = any_engine, "h2:1"
    await configure(
        engine,
        uid,
        t={"after": ["go"], "run": "X"},
        d={"after": ["t"], "run": "P"},
        ok={"after": ["go"], "run": "P"},
    )
    await step(engine, uid, "go")
    with pytest.raises(NotFoundError):
        await engine.skip(uid, "t#7")
    before = await engine.snapshot(uid)
    with pytest.raises(ConflictError):
        await engine.skip(uid, "ok#0")
    assert await engine.snapshot(uid) == before

    failed = await engine.instance(uid, "t#0")
    await engine.skip(uid, "t#0", result={"r": 1})
    skipped = await engine.instance(uid, "t#0")
    assert skipped.status == "skipped"
    assert "skipped" in stamps(skipped)
    for key in ("exceptionType", "exceptionInfo", "exceptionContext", "actualKwargs"):
        assert skipped.metadata[key] == failed.metadata[key]
    assert (skipped.metadata["cascade"], skipped.metadata["result"]) == (False, {"r": 1})
    assert await names_of(engine, uid, "d") == []
    assert "t" not in (await engine.snapshot(uid)).latestKwargs
    with pytest.raises(ConflictError):
        await engine.skip(uid, "t#0", cascade=True)

    uid = "h2:2"
    await configure(engine, uid, t={"after": ["go"], "run": "X"}, d={"after": ["t"], "run": "P"})
    await step(engine, uid, "go")
    outcome = await engine.skip(uid, "t#0", cascade=True, result=None)
    assert outcome.fires[0] == fired("t", ["d#0"])
    await settle(engine, uid)
    skipped = await engine.instance(uid, "t#0")
    assert (skipped.metadata["cascade"], skipped.metadata["result"]) == (True, {})
    assert ran_with(await engine.instance(uid, "d#0")) == {"t": {}}


async def test_h3_set_status_any_to_any(any_engine: Engine) -> None:
    """H3: any status to any, metadata shallow-merged (top-level keys replaced), a timestamp per
    status, the cascade fired with cascadeKwargs or {} whatever the status; unknown instance:
    not found. Service: an unknown status is refused."""
    engine, uid = any_engine, "h3:1"
    await configure(engine, uid, t={"after": ["go"], "run": "P"}, d={"after": ["t"], "run": "P"})
    await step(engine, uid, "go", {"g": 1})
    finished = await engine.instance(uid, "t#0")

    outcome = await engine.set_status(
        uid, "t#0", "failed", metadata={"result": {"replaced": True}, "note": "x"}
    )
    assert outcome.fires == []
    t0 = await engine.instance(uid, "t#0")
    assert t0.status == "failed"
    assert t0.metadata["result"] == {"replaced": True}
    assert t0.metadata["note"] == "x"
    assert t0.metadata["actualKwargs"] == finished.metadata["actualKwargs"]
    assert "failed" in stamps(t0)
    assert (await engine.replay(uid, "t#0")).clone == "t#1"
    await settle(engine, uid)

    outcome = await engine.set_status(uid, "t#1", "abandoned", cascade=True)
    assert outcome.fires[0] == fired("t")  # d#0 already ran from t#0's cascade
    assert (await engine.snapshot(uid)).latestKwargs["t"] == {}

    uid = "h3:2"
    await configure(engine, uid, t={"after": ["go"], "run": "P"}, d={"after": ["t"], "run": "P"})
    await engine.fire(uid, "go")
    outcome = await engine.set_status(uid, "t#0", "skipped", cascade=True)
    assert outcome.fires[0] == fired("t", ["d#0"])
    await settle(engine, uid)
    assert ran_with(await engine.instance(uid, "d#0")) == {"t": {}}
    assert await statuses(engine, uid) == {"d#0": "finished", "t#0": "skipped"}

    with pytest.raises(NotFoundError):
        await engine.set_status(uid, "t#5", "finished")
    with pytest.raises(InvalidError):
        await engine.set_status(uid, "t#0", "exploded")


async def test_h4_h5_metadata_and_logs_resolved(any_engine: Engine) -> None:
    """H4: shallow merge in any status, status and status timestamps untouched, lastModified
    bumped; H5: logsResolved true. Service: ``timestamps`` is the engine's own key."""
    engine, uid = any_engine, "h4:1"
    await configure(engine, uid, t={"after": ["A", "B"], "run": "P"})
    await engine.fire(uid, "A")
    await engine.set_metadata(uid, "t#0", {"info": {"a": 1, "b": 2}, "keep": 1})
    before = await engine.instance(uid, "t#0")
    await asyncio.sleep(0.005)

    updated = await engine.set_metadata(uid, "t#0", {"info": {"c": 3}})
    assert updated == await engine.instance(uid, "t#0")
    assert updated.status == "unstarted"
    assert plain_metadata(updated) == {"info": {"c": 3}, "keep": 1}
    old, new = before.metadata["timestamps"], updated.metadata["timestamps"]
    assert new["lastModified"] > old["lastModified"]
    assert {k: v for k, v in new.items() if k != "lastModified"} == {
        k: v for k, v in old.items() if k != "lastModified"
    }

    resolved = await engine.mark_logs_resolved(uid, "t#0")
    assert resolved.metadata["logsResolved"] is True
    assert resolved.status == "unstarted"

    with pytest.raises(NotFoundError):
        await engine.set_metadata(uid, "t#3", {"x": 1})
    with pytest.raises(InvalidError):
        await engine.set_metadata(uid, "t#0", {"timestamps": {}})


# -- I. Statuses and logs --------------------------------------------------------------------


async def test_i6_instances_with_unresolved_logs(any_engine: Engine) -> None:
    """I6: logs at ERROR (40) or above are unresolved unless the instance is abandoned,
    replayed or skipped, or its logs were marked resolved (H5)."""
    engine, uid = any_engine, "i6:1"
    runs = {"E40": failing_at(40), "W30": failing_at(30), "C50": finishing_at(50)}
    await configure(
        engine,
        uid,
        t_err={"after": ["go"], "run": "E40"},
        t_warn={"after": ["go"], "run": "W30"},
        t_crit={"after": ["go"], "run": "C50"},
        t_skip={"after": ["go"], "run": "E40"},
        t_marked={"after": ["go"], "run": "E40"},
        t_rep={"after": ["go"], "run": "E40"},
        t_ab={"after": ["go"], "run": "E40"},
    )
    await step(engine, uid, "go", behaviours=runs)
    await engine.skip(uid, "t_skip#0")
    await engine.mark_logs_resolved(uid, "t_marked#0")
    await engine.replay(uid, "t_rep#0")
    await settle(engine, uid, runs)
    await engine.set_status(uid, "t_ab#0", "abandoned")

    unresolved_logs = await engine.instances_with_unresolved_logs(uid)
    assert [instance.name for instance in unresolved_logs] == ["t_crit#0", "t_err#0", "t_rep#1"]


# -- K. Unresolved tasks and instances -------------------------------------------------------


async def test_k1_k2_k3_unresolved_tasks_and_instances(any_engine: Engine) -> None:
    """K1, K2, K3: the K3 example; scheduled and running instances are unresolved too; a
    downstream task whose upstream was skipped without cascade is an unresolved task with no
    unresolved instance."""
    engine, uid = any_engine, "k3:1"
    await configure(engine, uid, t_s={"after": ["first", "done"], "run": "P"})
    assert await unresolved(engine, uid) == (["t_s"], [])
    await engine.fire(uid, "first")
    assert await unresolved(engine, uid) == (["t_s"], ["t_s#0"])
    await engine.fire(uid, "done")
    assert await unresolved(engine, uid) == (["t_s"], ["t_s#0"])  # scheduled
    token = await token_of(engine, uid, "t_s#0")
    assert await unresolved(engine, uid) == (["t_s"], ["t_s#0"])  # running
    await engine.complete(uid, "t_s#0", token, {})
    assert await unresolved(engine, uid) == ([], [])

    uid = "k3:2"
    await configure(
        engine, uid, t_s={"after": ["first"], "run": "X"}, t_b={"after": ["t_s"], "run": "P"}
    )
    await step(engine, uid, "first")
    assert await unresolved(engine, uid) == (["t_s", "t_b"], ["t_s#0"])
    await engine.skip(uid, "t_s#0")
    assert await unresolved(engine, uid) == (["t_b"], [])


# -- L. Finalization -------------------------------------------------------------------------


async def test_l1_session_without_tasks_is_never_finalized(any_engine: Engine) -> None:
    """L1 (service): a session with no task is never finalized, however many fires it gets;
    finalize_if_ready on an unknown session is not found."""
    engine, uid = any_engine, "l1:empty"
    outcome = await engine.fire(uid, "anything")
    assert (outcome.fires, outcome.finalized) == ([fired("anything")], False)
    assert (await engine.finalize_if_ready(uid)).finalized is False
    snapshot = await engine.snapshot(uid)
    assert snapshot.finalized is False
    assert snapshot.latestKwargs == {"anything": {}}
    with pytest.raises(NotFoundError):
        await engine.finalize_if_ready("l1:unknown")


async def test_l1_finalized_once_and_and_every_counts(any_engine: Engine) -> None:
    """L1 steps 2 and 3: a task having sessionFinalized as andEvery waits for it; it fires once
    and never again (later fires, and the cascade of the task it ran, do not repeat it)."""
    engine, uid = any_engine, "l1:once"
    await configure(
        engine,
        uid,
        t_a={"after": ["go"], "run": "N"},
        t_fin={"after": [], "andEvery": FINAL, "run": "P"},
    )
    outcome = await engine.fire(uid, "go")
    assert (outcome.fires, outcome.finalized) == ([fired("go", ["t_a#0"])], False)
    done = await engine.complete(uid, "t_a#0", await token_of(engine, uid, "t_a#0"), {})
    assert done.fires == [fired("t_a"), fired(FINAL, ["t_fin#0"])]
    assert done.finalized is True
    await settle(engine, uid)
    assert ran_with(await engine.instance(uid, "t_fin#0")) == {FINAL: {}}

    for trigger in ("go", "other"):
        outcome = await step(engine, uid, trigger)
        assert (outcome.fires, outcome.finalized) == ([fired(trigger)], False)
    assert await names_of(engine, uid, "t_fin") == ["t_fin#0"]
    assert (await engine.snapshot(uid)).finalized is True


async def test_l1_an_earlier_fire_of_session_finalized_stops_it(any_engine: Engine) -> None:
    """L1 step 2: sessionFinalized fired before, by anyone (here the application): the recipe
    never fires it again."""
    engine, uid = any_engine, "l1:early"
    await configure(
        engine, uid, t_a={"after": ["go"], "run": "N"}, t_fin={"after": [FINAL], "run": "P"}
    )
    outcome = await step(engine, uid, FINAL, {"early": True})
    assert outcome.fires[0] == fired(FINAL, ["t_fin#0"])
    outcome = await engine.fire(uid, "go")
    log: list[tuple[str, Outcome]] = []
    await settle(engine, uid, {"N": recording(log)})
    assert [o.fires for _, o in log] == [[fired("t_a")]]
    snapshot = await engine.snapshot(uid)
    assert snapshot.latestKwargs[FINAL] == {"early": True}
    assert ran_with(snapshot.instances["t_fin#0"]) == {FINAL: {"early": True}}
    assert [name for name in snapshot.instances if name.startswith("t_fin")] == ["t_fin#0"]


async def test_l1_failed_instance_blocks_until_skipped(any_engine: Engine) -> None:
    """L1: a failed instance blocks finalization, even through unrelated fires, until it is
    resolved. Service: the check re-runs after every transition (DESIGN.md), so the skip
    without cascade finalizes at once."""
    engine, uid = any_engine, "l1:skip"
    await configure(
        engine, uid, t_a={"after": ["go"], "run": "X"}, t_fin={"after": [FINAL], "run": "P"}
    )
    await step(engine, uid, "go")
    outcome = await step(engine, uid, "noise")
    assert (outcome.fires, outcome.finalized) == ([fired("noise")], False)

    outcome = await engine.skip(uid, "t_a#0")
    assert outcome.fires == [fired(FINAL, ["t_fin#0"])]
    assert outcome.finalized is True
    await settle(engine, uid)
    assert ran_with(await engine.instance(uid, "t_fin#0")) == {FINAL: {}}
    assert (await engine.snapshot(uid)).finalized is True


async def test_l1_replay_alone_does_not_finalize_its_clone_cascade_does(
    any_engine: Engine,
) -> None:
    """L1: a replay leaves its clone unresolved, so it does not finalize; the clone's
    successful completion does."""
    engine, uid = any_engine, "l1:replay"
    await configure(engine, uid, t_a={"after": ["go"], "run": "X"})
    await step(engine, uid, "go")
    await configure(engine, uid, t_a={"after": ["go"], "run": "N"})
    outcome = await engine.replay(uid, "t_a#0")
    assert (outcome.fires, outcome.finalized) == ([], False)
    done = await engine.complete(uid, "t_a#1", await token_of(engine, uid, "t_a#1"), {})
    assert done.fires == [fired("t_a"), fired(FINAL)]
    assert done.finalized is True


async def test_l1_abandonments_are_seen(any_engine: Engine) -> None:
    """L1: an abandonment happens inside a fire, so the fire that abandons the last open
    instance finalizes the session."""
    engine, uid = any_engine, "l1:abandon"
    await configure(
        engine,
        uid,
        t_a={"after": ["go"], "run": "N"},
        t_w={"after": ["go", "more"], "unless": ["cancel"], "run": "N"},
    )
    outcome = await step(engine, uid, "go")
    assert outcome.finalized is False
    assert (await engine.snapshot(uid)).finalized is False

    outcome = await engine.fire(uid, "cancel")
    assert outcome.fires == [fired("cancel", abandoned=["t_w#0"]), fired(FINAL)]
    assert outcome.finalized is True


async def test_l1_unless_only_is_not_exempt(any_engine: Engine) -> None:
    """L1 step 3: a task having sessionFinalized only in its unless still blocks (and a task
    whose triggers never fire blocks forever)."""
    engine, uid = any_engine, "l1:unless"
    await configure(
        engine,
        uid,
        t_a={"after": ["go"], "run": "N"},
        t_u={"after": ["never"], "unless": [FINAL], "run": "P"},
    )
    await step(engine, uid, "go")
    await step(engine, uid, "noise")
    assert (await engine.finalize_if_ready(uid)).finalized is False
    snapshot = await engine.snapshot(uid)
    assert snapshot.finalized is False
    assert FINAL not in snapshot.latestKwargs
    assert await unresolved(engine, uid) == (["t_u"], [])
