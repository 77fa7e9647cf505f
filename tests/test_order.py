"""Order independence: without andEvery or unless, fire order does not matter.

With each trigger fired once, a task gets at most one instance (D5a), which holds every
after-trigger's single value however it got it (absorbed, D6, or pre-filled from latest_kwargs,
D7), and becomes runnable once its last after-trigger has fired. So every permutation of the
fires leaves the same instances, kwargs and statuses; and once scheduled work has run (cascades
included), the same results. Checked for hand-written configurations on both backends (all 24
orders of four triggers, running the work at the end or after every fire) and for random
configurations with hypothesis.
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.asyncio import Redis

from service.engine import Engine, SessionSnapshot
from tests.support import settle

TRIGGERS = ["A", "B", "C", "D"]
KWARGS = {trigger: {"v": index, "from": trigger} for index, trigger in enumerate(TRIGGERS)}

CONFIGURATIONS: dict[str, dict[str, dict[str, Any]]] = {
    # Overlapping after sets, a cascade (t_c after t_a) and a two-level cascade (t_d after t_c).
    "overlapping": {
        "t_a": {"after": ["A", "B"], "run": "P"},
        "t_b": {"after": ["B", "C"], "run": "P"},
        "t_c": {"after": ["t_a", "D"], "run": "P"},
        "t_d": {"after": ["t_c", "t_b", "A"], "run": "P"},
    },
    # Every trigger, a failing task (no cascade: t_f waits forever) and a task after two tasks.
    "failure": {
        "t_all": {"after": ["D", "C", "B", "A"], "run": "P"},
        "t_x": {"after": ["A", "C"], "run": "X"},
        "t_f": {"after": ["t_x"], "run": "P"},
        "t_j": {"after": ["t_all", "B"], "run": "N"},
        "t_k": {"after": ["t_all", "t_j", "D"], "run": "P"},
    },
    # A cascade trigger also needed by a task created earlier by an application trigger.
    "chain": {
        "t_1": {"after": ["A"], "run": "P"},
        "t_2": {"after": ["t_1", "B"], "run": "P"},
        "t_3": {"after": ["t_2", "C", "t_1"], "run": "P"},
        "t_4": {"after": ["D", "t_3"], "run": "N"},
        "t_0": {"after": ["t_4", "A"], "run": "P"},
    },
}

Observed = dict[str, tuple[str, dict[str, Any], Any, Any]]


def observe(snapshot: SessionSnapshot) -> Observed:
    """What must not depend on the order: per instance its status, kwargs, received kwargs
    (E5) and result."""
    return {
        name: (
            instance.status,
            instance.kwargs,
            instance.metadata.get("actualKwargs"),
            instance.metadata.get("result"),
        )
        for name, instance in snapshot.instances.items()
    }


async def run_order(
    engine: Engine,
    tasks: dict[str, dict[str, Any]],
    order: tuple[str, ...],
    *,
    work_each_step: bool,
) -> tuple[Observed, Observed, dict[str, Any]]:
    """Configure a fresh session, fire ``order``; returns what it looks like right after the
    fires (meaningful when no work ran in between), after settling, and its latestKwargs."""
    uid = f"order-{uuid.uuid4().hex}"
    await engine.configure(uid, {"tasks": tasks})
    for trigger in order:
        await engine.fire(uid, trigger, KWARGS[trigger])
        if work_each_step:
            await settle(engine, uid)
    fired = observe(await engine.snapshot(uid))
    await settle(engine, uid)
    snapshot = await engine.snapshot(uid)
    assert not [i for i in snapshot.instances.values() if i.status in ("scheduled", "running")]
    return fired, observe(snapshot), snapshot.latestKwargs


async def test_every_fire_order_gives_the_same_session(any_engine: Engine) -> None:
    for label, tasks in CONFIGURATIONS.items():
        reference = await run_order(any_engine, tasks, tuple(TRIGGERS), work_each_step=False)
        fired, settled, _ = reference
        assert fired, f"{label}: the fires created instances"
        assert any(status == "finished" for status, *_ in settled.values()), label
        for order in itertools.permutations(TRIGGERS):
            got = await run_order(any_engine, tasks, order, work_each_step=False)
            assert got[0] == fired, f"{label}: {order} right after the fires"
            assert got[1:] == reference[1:], f"{label}: {order} after settling"
            stepwise = await run_order(any_engine, tasks, order, work_each_step=True)
            assert stepwise[1:] == reference[1:], f"{label}: {order}, work run after each fire"


async def test_overlapping_reference_by_hand(any_engine: Engine) -> None:
    """The reference the permutations are compared with is itself right (D4-D10, E5, F4, L1)."""
    _, settled, latest = await run_order(
        any_engine, CONFIGURATIONS["overlapping"], ("D", "C", "B", "A"), work_each_step=False
    )
    a, b, c, d = (KWARGS[t] for t in TRIGGERS)
    result_a = {"kwargs": {"A": a, "B": b}}
    result_b = {"kwargs": {"B": b, "C": c}}
    result_c = {"kwargs": {"t_a": result_a, "D": d}}
    kwargs_d = {"t_c": result_c, "t_b": result_b, "A": a}
    assert settled == {
        "t_a#0": ("finished", {"A": a, "B": b}, {"A": a, "B": b}, result_a),
        "t_b#0": ("finished", {"B": b, "C": c}, {"B": b, "C": c}, result_b),
        "t_c#0": ("finished", {"t_a": result_a, "D": d}, {"t_a": result_a, "D": d}, result_c),
        "t_d#0": ("finished", kwargs_d, kwargs_d, {"kwargs": kwargs_d}),
    }
    assert latest == {
        "A": a, "B": b, "C": c, "D": d, "t_a": result_a, "t_b": result_b, "t_c": result_c,
        "t_d": {"kwargs": kwargs_d}, "sessionFinalized": {},
    }  # fmt: skip


# -- random configurations ---------------------------------------------------------------------

TASK_NAMES = ["t_p", "t_q", "t_r", "t_s"]


@st.composite
def order_cases(draw: st.DrawFn) -> tuple[dict[str, dict[str, Any]], list[tuple[str, ...]]]:
    """2-4 tasks, each after a non-empty set of triggers and names of other tasks (cycles
    allowed: such tasks just never run), plus a few permutations of the four triggers."""
    names = TASK_NAMES[: draw(st.integers(2, 4))]
    tasks: dict[str, dict[str, Any]] = {}
    for name in names:
        after = draw(st.sets(st.sampled_from(TRIGGERS), max_size=3))
        after |= draw(st.sets(st.sampled_from([n for n in names if n != name]), max_size=2))
        if not after:
            after = {draw(st.sampled_from(TRIGGERS))}
        tasks[name] = {"after": sorted(after), "run": draw(st.sampled_from(["P", "P", "X"]))}
    orders = draw(st.lists(st.permutations(TRIGGERS).map(tuple), min_size=2, max_size=4))
    return tasks, orders


def test_random_configurations_are_order_independent(redis_url: str) -> None:
    loop = asyncio.new_event_loop()
    engine = Engine(
        Redis.from_url(redis_url, decode_responses=True),
        prefix=f"order-{uuid.uuid4().hex[:12]}",
    )
    try:
        loop.run_until_complete(engine.load_scripts())

        @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
        @given(case=order_cases(), work_each_step=st.booleans())
        def check(
            case: tuple[dict[str, dict[str, Any]], list[tuple[str, ...]]], work_each_step: bool
        ) -> None:
            tasks, orders = case
            reference = loop.run_until_complete(
                run_order(engine, tasks, tuple(TRIGGERS), work_each_step=False)
            )
            for order in orders:
                got = loop.run_until_complete(
                    run_order(engine, tasks, order, work_each_step=work_each_step)
                )
                if not work_each_step:
                    assert got[0] == reference[0], f"{order}: right after the fires"
                assert got[1:] == reference[1:], f"{order}: after settling"

        check()
    finally:
        loop.run_until_complete(engine.aclose())
        loop.close()
