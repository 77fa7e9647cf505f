"""Leases and the outbox (DESIGN.md section 2), against a real Redis.

* claim takes a scheduled instance to running under a lease (token, expiry, attempt); a
  duplicate message (second claim while the lease is live, or a claim of a resolved instance)
  does nothing; an expired lease is claimed again (same instance, attempt + 1, new token) and
  the old token can no longer change anything;
* retry is one step: parent replayed, clone with parent/depth due after the cooldown, which
  claim respects (not_due) and the outbox keeps; past maxRetries the instance fails;
* the outbox holds what was scheduled until it is acknowledged or claimed;
* concurrent claims and completes of one instance: exactly one wins, the cascade fires once.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from service.engine import ConflictError, Engine, Outcome
from service.engine.keys import session_keys

UID = "lease:1"

CONFIG: dict[str, Any] = {
    "tasks": {
        "t_a": {
            "after": ["go"],
            "run": "P",
            "maxRetries": 3,
            "withParams": {"cfg": {"k": 1}, "go": {"base": True, "deep": {"x": 1, "y": 1}}},
        },
        "t_b": {"after": ["t_a"], "run": "P"},
        "t_x": {"after": ["go"], "run": "X"},
    }
}


def now_ms() -> int:
    return int(time.time() * 1000)


def outbox_key(engine: Engine, uid: str = UID) -> str:
    key = session_keys(uid, engine.prefix)[8]
    assert key.endswith(":outbox"), key
    return key


async def outbox(engine: Engine, uid: str = UID) -> dict[str, float]:
    """The session's outbox, read straight from Redis: instance -> due time (ms). Events for
    webhooks (members starting with "@") share the outbox and are left out here."""
    entries = await engine.client.zrange(outbox_key(engine, uid), 0, -1, withscores=True)
    return {name: due for name, due in entries if not name.startswith("@")}


async def leases(engine: Engine, uid: str = UID) -> dict[str, float]:
    key = session_keys(uid, engine.prefix)[9]
    assert key.endswith(":leases"), key
    return dict(await engine.client.zrange(key, 0, -1, withscores=True))


async def raw_state(engine: Engine, uid: str = UID) -> dict[str, Any]:
    """Every key of the session as Redis holds it (snapshots do not show outbox and leases)."""
    state: dict[str, Any] = {}
    for key in session_keys(uid, engine.prefix):
        kind = await engine.client.type(key)
        if kind == "hash":
            state[key] = await engine.client.hgetall(key)
        elif kind == "zset":
            state[key] = await engine.client.zrange(key, 0, -1, withscores=True)
        else:
            state[key] = (kind, await engine.client.get(key) if kind == "string" else None)
    return state


async def unchanged_by(engine: Engine, call: Any, uid: str = UID) -> Any:
    """Runs ``call()`` and checks it changed nothing at all; returns its answer."""
    before, raw_before = await engine.snapshot(uid), await raw_state(engine, uid)
    answer = await call()
    assert await engine.snapshot(uid) == before
    assert await raw_state(engine, uid) == raw_before
    return answer


async def refused(engine: Engine, call: Any, uid: str = UID) -> None:
    """``call()`` raises ConflictError and changes nothing."""

    async def attempt() -> None:
        with pytest.raises(ConflictError):
            await call()

    await unchanged_by(engine, attempt, uid)


async def start(engine: Engine, config: dict[str, Any] | None = None) -> Outcome:
    await engine.configure(UID, config or CONFIG)
    return await engine.fire(UID, "go", {"g": 1, "deep": {"y": 2}})


async def claimed(engine: Engine, name: str, **options: Any) -> str:
    claim = await engine.claim(UID, name, **options)
    assert claim.state == "claimed", claim
    assert claim.token
    return claim.token


# ---------------------------------------------------------------------------------------------
# Claim
# ---------------------------------------------------------------------------------------------


async def test_claim_gives_a_token_an_expiry_and_attempt_one(any_engine: Engine) -> None:
    engine = any_engine
    outcome = await start(engine)
    assert outcome.scheduled == ["t_a#0", "t_x#0"]

    before = now_ms()
    claim = await engine.claim(UID, "t_a#0", lease_ms=10_000)
    after = now_ms()

    assert claim.state == "claimed"
    assert isinstance(claim.token, str) and len(claim.token) >= 16
    assert claim.attempt == 1
    assert claim.expires is not None
    assert before + 10_000 - 1_000 <= claim.expires <= after + 10_000 + 1_000
    assert claim.instance is not None and claim.instance.status == "running"
    instance = await engine.instance(UID, "t_a#0")
    assert instance.status == "running"
    assert instance.metadata["attempt"] == 1
    assert "running" in instance.metadata["timestamps"]
    assert await leases(engine) == {"t_a#0": claim.expires}


async def test_second_claim_while_the_lease_is_live_is_busy(any_engine: Engine) -> None:
    engine = any_engine
    await start(engine)
    first = await engine.claim(UID, "t_a#0", lease_ms=10_000)
    assert first.state == "claimed"

    for _ in range(3):  # a duplicate message, redelivered more than once
        again = await unchanged_by(engine, lambda: engine.claim(UID, "t_a#0", lease_ms=10_000))
        assert again.state == "busy"
        assert again.token is None
        assert again.expires == first.expires

    instance = await engine.instance(UID, "t_a#0")
    assert instance.metadata["attempt"] == 1


async def test_claim_of_a_resolved_or_failed_instance_is_done(engine: Engine) -> None:
    await engine.configure(
        UID,
        {
            "tasks": {
                **CONFIG["tasks"],
                "t_r": {"after": ["go"], "run": "X"},
                "t_k": {"after": ["go"], "run": "X"},
                "t_n": {"after": ["never"], "unless": ["go"], "run": "P"},
            }
        },
    )
    await engine.fire(UID, "go")
    token = await claimed(engine, "t_a#0")
    await engine.complete(UID, "t_a#0", token, {"r": 1})
    token = await claimed(engine, "t_x#0")
    await engine.fail(UID, "t_x#0", token, "builtins.RuntimeError", "boom")
    token = await claimed(engine, "t_r#0")
    await engine.fail(UID, "t_r#0", token, "builtins.RuntimeError", "boom")
    await engine.replay(UID, "t_r#0")
    token = await claimed(engine, "t_k#0")
    await engine.fail(UID, "t_k#0", token, "builtins.RuntimeError", "boom")
    await engine.skip(UID, "t_k#0")

    expected = {
        "t_a#0": "finished",
        "t_x#0": "failed",
        "t_r#0": "replayed",
        "t_k#0": "skipped",
        "t_n#0": "abandoned",
    }
    for name, status in expected.items():
        answer = await unchanged_by(engine, lambda name=name: engine.claim(UID, name))
        assert answer.state == "done", name
        assert answer.status == status
        assert answer.token is None


async def test_claim_removes_the_instance_from_the_outbox(any_engine: Engine) -> None:
    engine = any_engine
    await start(engine)
    assert set(await outbox(engine)) == {"t_a#0", "t_x#0"}
    await claimed(engine, "t_a#0")
    assert set(await outbox(engine)) == {"t_x#0"}


async def test_claim_records_actual_kwargs_merged_under_with_params(engine: Engine) -> None:
    """E1: withParams is the base, the instance kwargs win, objects merge recursively, lists are
    replaced; E5: actualKwargs is exactly what the task receives."""
    await engine.configure(
        UID,
        {
            "tasks": {
                "t_a": {
                    "after": ["go", "more"],
                    "run": "P",
                    "withParams": {
                        "go": {"a": 0, "keep": "wp", "deep": {"x": 1, "y": 1}, "list": [9, 9]},
                        "cfg": {"k": 1},
                    },
                }
            }
        },
    )
    await engine.fire(UID, "more")
    await engine.fire(UID, "go", {"a": 1, "deep": {"y": 2}, "list": [1]})
    claim = await engine.claim(UID, "t_a#0")
    expected = {
        "go": {"a": 1, "keep": "wp", "deep": {"x": 1, "y": 2}, "list": [1]},
        "more": {},
        "cfg": {"k": 1},
    }
    assert claim.state == "claimed"
    assert claim.kwargs == expected
    instance = await engine.instance(UID, "t_a#0")
    assert instance.metadata["actualKwargs"] == expected
    assert instance.metadata["attempt"] == 1
    assert instance.kwargs == {"go": {"a": 1, "deep": {"y": 2}, "list": [1]}, "more": {}}


async def test_claim_after_a_reconfiguration_uses_the_new_with_params(any_engine: Engine) -> None:
    """B11, E4: the kwargs are computed at claim time from the task's current definition."""
    engine = any_engine
    await start(engine)
    await engine.configure(
        UID,
        {"tasks": {"t_a": {"after": ["go"], "run": "P", "withParams": {"new": {"v": 2}}}}},
    )
    claim = await engine.claim(UID, "t_a#0")
    assert claim.state == "claimed"
    expected = {"go": {"g": 1, "deep": {"y": 2}}, "new": {"v": 2}}
    assert claim.kwargs == expected
    assert claim.task is not None and claim.task.withParams == {"new": {"v": 2}}
    assert (await engine.instance(UID, "t_a#0")).metadata["actualKwargs"] == expected


# ---------------------------------------------------------------------------------------------
# Lease expiry and stale tokens
# ---------------------------------------------------------------------------------------------


async def test_expired_lease_is_claimed_again_and_the_old_token_is_refused(
    any_engine: Engine,
) -> None:
    engine = any_engine
    await start(engine)
    first = await engine.claim(UID, "t_a#0", lease_ms=50)
    assert first.state == "claimed" and first.attempt == 1
    old = first.token
    assert old is not None

    await asyncio.sleep(0.1)
    second = await engine.claim(UID, "t_a#0", lease_ms=10_000)
    assert second.state == "claimed"
    assert second.attempt == 2
    assert second.token and second.token != old
    assert second.expires is not None and first.expires is not None
    assert second.expires > first.expires
    instance = await engine.instance(UID, "t_a#0")
    assert instance.status == "running"
    assert instance.metadata["attempt"] == 2
    assert await leases(engine) == {"t_a#0": second.expires}

    # The worker that lost its lease answers late: nothing it says changes anything.
    await refused(engine, lambda: engine.complete(UID, "t_a#0", old, {"late": True}))
    await refused(engine, lambda: engine.fail(UID, "t_a#0", old, "builtins.RuntimeError", "x"))
    await refused(engine, lambda: engine.renew_lease(UID, "t_a#0", old, lease_ms=60_000))
    await refused(engine, lambda: engine.retry(UID, "t_a#0", old, cooldown=0))
    await refused(engine, lambda: engine.set_status(UID, "t_a#0", "skipped", token=old))

    # The current holder finishes normally; the cascade fires once.
    done = await engine.complete(UID, "t_a#0", second.token, {"ok": 2})
    assert done.scheduled == ["t_b#0"]
    snapshot = await engine.snapshot(UID)
    assert snapshot.instances["t_a#0"].status == "finished"
    assert snapshot.instances["t_a#0"].metadata["result"] == {"ok": 2}
    assert await leases(engine) == {}
    # And after it finished, neither token moves it any more.
    for token in (old, second.token):
        await refused(engine, lambda token=token: engine.complete(UID, "t_a#0", token, {}))
        await refused(engine, lambda token=token: engine.renew_lease(UID, "t_a#0", token))


async def test_third_claim_after_two_expiries_is_attempt_three(engine: Engine) -> None:
    await start(engine)
    tokens = set()
    for attempt in (1, 2, 3):
        claim = await engine.claim(UID, "t_a#0", lease_ms=50)
        assert claim.state == "claimed" and claim.attempt == attempt
        tokens.add(claim.token)
        await asyncio.sleep(0.1)
    assert len(tokens) == 3
    assert (await engine.instance(UID, "t_a#0")).metadata["attempt"] == 3


async def test_renew_lease_extends_the_expiry(any_engine: Engine) -> None:
    engine = any_engine
    await start(engine)
    claim = await engine.claim(UID, "t_a#0", lease_ms=300)
    assert claim.state == "claimed" and claim.token and claim.expires

    expires = await engine.renew_lease(UID, "t_a#0", claim.token, lease_ms=10_000)
    assert isinstance(expires, int)
    assert expires >= claim.expires + 9_000
    assert await leases(engine) == {"t_a#0": expires}

    await asyncio.sleep(0.4)  # past the original lease: the renewal keeps it
    again = await engine.claim(UID, "t_a#0")
    assert again.state == "busy"
    assert again.expires == expires

    done = await engine.complete(UID, "t_a#0", claim.token, {})
    assert done.scheduled == ["t_b#0"]


async def test_without_renewal_the_lease_runs_out(engine: Engine) -> None:
    """Control for the renewal test: the same lease, not renewed, is taken over."""
    await start(engine)
    await claimed(engine, "t_a#0", lease_ms=300)
    await asyncio.sleep(0.4)
    again = await engine.claim(UID, "t_a#0")
    assert again.state == "claimed" and again.attempt == 2


# ---------------------------------------------------------------------------------------------
# Retry: cooldown, budget, replacement kwargs
# ---------------------------------------------------------------------------------------------


async def test_retry_with_a_cooldown_schedules_the_clone_after_it(any_engine: Engine) -> None:
    engine = any_engine
    await start(engine)
    token = await claimed(engine, "t_a#0")
    await engine.ack_dispatched(UID, ["t_a#0", "t_x#0"])

    before = now_ms()
    outcome = await engine.retry(UID, "t_a#0", token, cooldown=0.5, metadata={"why": "busy"})
    assert outcome.retried is True
    assert outcome.clone == "t_a#1"
    assert outcome.scheduled == ["t_a#1"]
    assert outcome.due is not None
    assert before + 500 - 1_000 <= outcome.due <= now_ms() + 500 + 1_000

    parent = await engine.instance(UID, "t_a#0")
    assert parent.status == "replayed"
    assert parent.metadata["cooldown"] == 0.5
    assert parent.metadata["why"] == "busy"
    clone = await engine.instance(UID, "t_a#1")
    assert clone.status == "scheduled"
    assert clone.metadata["parent"] == "t_a#0"
    assert clone.metadata["depth"] == 1
    assert "result" not in clone.metadata and "cooldown" not in clone.metadata
    assert clone.kwargs == parent.kwargs
    assert (await outbox(engine))["t_a#1"] == outcome.due
    assert await leases(engine) == {}

    # Too early: the claim says how long to wait and changes nothing; the outbox keeps it.
    early = await unchanged_by(engine, lambda: engine.claim(UID, "t_a#1"))
    assert early.state == "not_due"
    assert early.wait is not None and 0 < early.wait <= 500
    assert await engine.ack_dispatched(UID, ["t_a#1"]) == 0
    assert (await outbox(engine))["t_a#1"] == outcome.due
    assert (await engine.instance(UID, "t_a#1")).status == "scheduled"

    await asyncio.sleep(early.wait / 1000 + 0.1)
    claim = await engine.claim(UID, "t_a#1", lease_ms=10_000)
    assert claim.state == "claimed"
    assert claim.attempt == 1
    assert claim.expires is not None and claim.expires - 10_000 >= outcome.due  # not early
    assert "t_a#1" not in await outbox(engine)


async def test_cooling_down_clone_is_never_claimed_early(engine: Engine) -> None:
    """Many eager claims during the cooldown: all not_due, none runs it, then exactly one."""
    await start(engine)
    token = await claimed(engine, "t_a#0")
    outcome = await engine.retry(UID, "t_a#0", token, cooldown=0.3)
    assert outcome.due is not None
    answers = []
    while now_ms() < outcome.due - 50:
        answers.append((await engine.claim(UID, "t_a#1")).state)
        await asyncio.sleep(0.02)
    assert answers and set(answers) == {"not_due"}
    await asyncio.sleep(max(0, outcome.due - now_ms()) / 1000 + 0.05)
    states = [
        c.state for c in await asyncio.gather(*(engine.claim(UID, "t_a#1") for _ in range(5)))
    ]
    assert sorted(states) == ["busy"] * 4 + ["claimed"]


async def test_retries_past_max_retries_end_failed(any_engine: Engine) -> None:
    """N13 with maxRetries 2: replayed, replayed, failed (MaxRetriesExceeded)."""
    engine = any_engine
    config = {"tasks": {**CONFIG["tasks"], "t_a": {**CONFIG["tasks"]["t_a"], "maxRetries": 2}}}
    await start(engine, config)

    name = "t_a#0"
    for depth in (0, 1):
        token = await claimed(engine, name)
        outcome = await engine.retry(UID, name, token, cooldown=0, metadata={"n": depth})
        assert outcome.retried is True
        assert outcome.clone == f"t_a#{depth + 1}"
        name = outcome.clone
        clone = await engine.instance(UID, name)
        assert clone.metadata["parent"] == f"t_a#{depth}"
        assert clone.metadata["depth"] == depth + 1

    token = await claimed(engine, name)
    outcome = await engine.retry(
        UID,
        name,
        token,
        cooldown=2,
        metadata={"n": 2},
        cause=("app.Busy", "try later", {"code": 503}),
    )
    assert outcome.retried is False
    assert outcome.clone is None
    assert outcome.scheduled == []

    snapshot = await engine.snapshot(UID)
    chain = [snapshot.instances[f"t_a#{n}"].status for n in range(3)]
    assert chain == ["replayed", "replayed", "failed"]
    assert "t_a#3" not in snapshot.instances
    last = snapshot.instances["t_a#2"].metadata
    assert last["exceptionType"] == "triggers.MaxRetriesExceeded"
    assert last["depth"] == 2 and last["parent"] == "t_a#1"
    replay_metadata = last["exceptionContext"]["replay_metadata"]
    assert replay_metadata["n"] == 2
    assert replay_metadata["cooldown"] == 2
    assert replay_metadata["exceptionType"] == "app.Busy"
    assert replay_metadata["exceptionContext"] == {"code": 503}
    assert "t_b" not in {i.task for i in snapshot.instances.values()}
    assert "t_a#2" not in await outbox(engine)
    assert await leases(engine) == {}
    # A failed instance: claim says done, and an operator can still replay it.
    assert (await engine.claim(UID, "t_a#2")).state == "done"


async def test_retry_budget_zero_fails_at_once(engine: Engine) -> None:
    config = {"tasks": {"t_a": {"after": ["go"], "run": "P", "maxRetries": 0}}}
    await start(engine, config)
    token = await claimed(engine, "t_a#0")
    outcome = await engine.retry(UID, "t_a#0", token)
    assert outcome.retried is False
    instance = await engine.instance(UID, "t_a#0")
    assert instance.status == "failed"
    assert instance.metadata["exceptionType"] == "triggers.MaxRetriesExceeded"
    assert instance.metadata["exceptionContext"]["replay_metadata"]["cooldown"] == 0


async def test_operator_replays_use_up_the_retry_budget(engine: Engine) -> None:
    """G4: depth grows with operator replays too."""
    config = {"tasks": {"t_a": {"after": ["go"], "run": "P", "maxRetries": 1}}}
    await start(engine, config)
    token = await claimed(engine, "t_a#0")
    await engine.fail(UID, "t_a#0", token, "builtins.RuntimeError", "boom")
    replayed = await engine.replay(UID, "t_a#0")
    assert replayed.clone == "t_a#1"
    token = await claimed(engine, "t_a#1")
    outcome = await engine.retry(UID, "t_a#1", token)
    assert outcome.retried is False
    assert (await engine.instance(UID, "t_a#1")).metadata[
        "exceptionType"
    ] == "triggers.MaxRetriesExceeded"


@pytest.mark.parametrize(
    ("replacement", "clone_kwargs", "actual"),
    [
        (
            None,
            {"go": {"g": 1, "deep": {"y": 2}}},
            {
                "go": {"base": True, "g": 1, "deep": {"x": 1, "y": 2}},
                "cfg": {"k": 1},
            },
        ),
        ({}, {}, {"go": {"base": True, "deep": {"x": 1, "y": 1}}, "cfg": {"k": 1}}),
        (
            {"go": {"b": 2}, "other": {}},
            {"go": {"b": 2}, "other": {}},
            {
                "go": {"base": True, "b": 2, "deep": {"x": 1, "y": 1}},
                "other": {},
                "cfg": {"k": 1},
            },
        ),
    ],
    ids=["absent", "empty", "replacement"],
)
async def test_retry_with_replacement_kwargs(
    any_engine: Engine,
    replacement: dict[str, Any] | None,
    clone_kwargs: dict[str, Any],
    actual: dict[str, Any],
) -> None:
    """G7/H1: no kwargs keeps the instance's; a map (even {}) replaces the whole map; withParams
    still merge at claim."""
    engine = any_engine
    await start(engine)
    token = await claimed(engine, "t_a#0")
    outcome = await engine.retry(UID, "t_a#0", token, kwargs=replacement)
    assert outcome.clone == "t_a#1"
    clone = await engine.instance(UID, "t_a#1")
    assert clone.kwargs == clone_kwargs
    assert (await engine.instance(UID, "t_a#0")).kwargs == {"go": {"g": 1, "deep": {"y": 2}}}
    claim = await engine.claim(UID, "t_a#1")
    assert claim.state == "claimed"
    assert claim.kwargs == actual
    assert (await engine.instance(UID, "t_a#1")).metadata["actualKwargs"] == actual


# ---------------------------------------------------------------------------------------------
# Outbox
# ---------------------------------------------------------------------------------------------


async def test_fire_fills_the_outbox_and_ack_empties_it(any_engine: Engine) -> None:
    engine = any_engine
    before = now_ms()
    outcome = await start(engine)
    after = now_ms()
    box = await outbox(engine)
    assert set(box) == set(outcome.scheduled) == {"t_a#0", "t_x#0"}
    assert all(before - 1_000 <= due <= after + 1_000 for due in box.values())

    assert await engine.ack_dispatched(UID, ["t_a#0"]) == 1
    assert set(await outbox(engine)) == {"t_x#0"}
    assert await engine.ack_dispatched(UID, ["t_a#0"]) == 0  # idempotent
    assert await engine.ack_dispatched(UID, ["t_x#0", "t_a#0"]) == 1
    assert await outbox(engine) == {}
    # Acknowledging hands over, it does not run: both stay scheduled, claimable.
    statuses = {i.name: i.status for i in await engine.instances(UID)}
    assert statuses == {"t_a#0": "scheduled", "t_x#0": "scheduled"}
    assert (await engine.claim(UID, "t_a#0")).state == "claimed"


async def test_ack_keeps_a_cooling_down_clone(any_engine: Engine) -> None:
    engine = any_engine
    await start(engine)
    await engine.ack_dispatched(UID, ["t_a#0", "t_x#0"])
    token = await claimed(engine, "t_a#0")
    outcome = await engine.retry(UID, "t_a#0", token, cooldown=30)
    assert outcome.due is not None and outcome.due > now_ms() + 20_000
    assert await outbox(engine) == {"t_a#1": outcome.due}

    assert await engine.ack_dispatched(UID, ["t_a#1"]) == 0
    assert await outbox(engine) == {"t_a#1": outcome.due}
    early = await engine.claim(UID, "t_a#1")
    assert early.state == "not_due" and early.wait is not None and early.wait > 20_000


async def test_cascade_and_replay_put_their_instances_in_the_outbox(engine: Engine) -> None:
    await start(engine)
    await engine.ack_dispatched(UID, ["t_a#0", "t_x#0"])
    token = await claimed(engine, "t_a#0")
    await engine.complete(UID, "t_a#0", token, {"r": 1})
    assert set(await outbox(engine)) == {"t_b#0"}
    token = await claimed(engine, "t_x#0")
    await engine.fail(UID, "t_x#0", token, "builtins.RuntimeError", "boom")
    replayed = await engine.replay(UID, "t_x#0")
    assert set(await outbox(engine)) == {"t_b#0", replayed.clone}


# ---------------------------------------------------------------------------------------------
# Concurrency
# ---------------------------------------------------------------------------------------------


async def test_twenty_concurrent_claims_one_wins(any_engine: Engine) -> None:
    engine = any_engine
    await start(engine)
    claims = await asyncio.gather(*(engine.claim(UID, "t_a#0") for _ in range(20)))
    states = [claim.state for claim in claims]
    assert states.count("claimed") == 1, states
    assert states.count("busy") == 19, states
    winner = next(claim for claim in claims if claim.state == "claimed")
    assert winner.attempt == 1
    instance = await engine.instance(UID, "t_a#0")
    assert instance.status == "running"
    assert instance.metadata["attempt"] == 1
    assert await leases(engine) == {"t_a#0": winner.expires}
    assert winner.token is not None
    await engine.complete(UID, "t_a#0", winner.token, {})


async def test_ten_concurrent_completes_one_wins_and_cascades_once(any_engine: Engine) -> None:
    engine = any_engine
    await start(engine)
    token = await claimed(engine, "t_a#0")
    version = (await engine.snapshot(UID)).version

    answers = await asyncio.gather(
        *(engine.complete(UID, "t_a#0", token, {"n": i}) for i in range(10)),
        return_exceptions=True,
    )
    wins = [answer for answer in answers if isinstance(answer, Outcome)]
    losses = [answer for answer in answers if not isinstance(answer, Outcome)]
    assert len(wins) == 1, answers
    assert all(isinstance(loss, ConflictError) for loss in losses), losses
    assert wins[0].scheduled == ["t_b#0"]

    snapshot = await engine.snapshot(UID)
    assert snapshot.version == version + 1
    downstream = [name for name, i in snapshot.instances.items() if i.task == "t_b"]
    assert downstream == ["t_b#0"]
    result = snapshot.instances["t_a#0"].metadata["result"]
    assert snapshot.instances["t_b#0"].kwargs == {"t_a": result}
    assert snapshot.latestKwargs["t_a"] == result
    assert set(await outbox(engine)) == {"t_b#0", "t_x#0"}


async def test_ten_concurrent_retries_make_one_clone(engine: Engine) -> None:
    await start(engine)
    token = await claimed(engine, "t_a#0")
    answers = await asyncio.gather(
        *(engine.retry(UID, "t_a#0", token, cooldown=0) for _ in range(10)),
        return_exceptions=True,
    )
    wins = [answer for answer in answers if isinstance(answer, Outcome)]
    assert len(wins) == 1, answers
    assert all(isinstance(a, ConflictError) for a in answers if a is not wins[0])
    names = sorted(i.name for i in await engine.instances(UID, task="t_a"))
    assert names == ["t_a#0", "t_a#1"]
