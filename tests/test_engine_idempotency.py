"""Idempotency-Key support in the scripts: one effect per key, the same answer every time."""

from __future__ import annotations

import asyncio

import pytest

from service.engine import Engine, Idempotency, IdempotencyMismatchError, NotFoundError


async def test_repeated_fire_has_one_effect_and_the_same_answer(any_engine: Engine) -> None:
    engine = any_engine
    await engine.configure("i:1", {"tasks": {"t": {"after": [], "andEvery": "p", "run": "N"}}})
    key = Idempotency("k1", "fingerprint-a")
    first = await engine.fire("i:1", "p", {"n": 1}, idempotency=key)
    again = await engine.fire("i:1", "p", {"n": 1}, idempotency=key)
    assert first == again and first.scheduled == ["t#0"]
    snapshot = await engine.snapshot("i:1")
    assert list(snapshot.instances) == ["t#0"]


async def test_fifty_parallel_fires_with_one_key_have_one_effect(any_engine: Engine) -> None:
    engine = any_engine
    await engine.configure("i:2", {"tasks": {"t": {"after": [], "andEvery": "p", "run": "N"}}})
    key = Idempotency("k2", "fingerprint-b")
    outcomes = await asyncio.gather(
        *(engine.fire("i:2", "p", {"n": 1}, idempotency=key) for _ in range(50))
    )
    assert all(outcome == outcomes[0] for outcome in outcomes)
    assert list((await engine.snapshot("i:2")).instances) == ["t#0"]


async def test_same_key_with_another_request_is_refused(any_engine: Engine) -> None:
    engine = any_engine
    await engine.fire("i:3", "p", idempotency=Idempotency("k3", "one"))
    before = await engine.snapshot("i:3")
    with pytest.raises(IdempotencyMismatchError):
        await engine.fire("i:3", "q", idempotency=Idempotency("k3", "two"))
    assert await engine.snapshot("i:3") == before


async def test_records_expire_and_errors_are_not_stored(engine: Engine) -> None:
    key = Idempotency("k4", "fp", ttl_ms=50)
    with pytest.raises(NotFoundError):
        await engine.replay("i:4", "t#0", idempotency=key)
    await engine.fire("i:4", "p", idempotency=key)
    await asyncio.sleep(0.1)
    second = await engine.fire("i:4", "p", idempotency=key)  # record expired: a new fire
    assert second.fires[0].trigger == "p"
    assert (await engine.snapshot("i:4")).version == 2


async def test_delete_and_configure_are_idempotent(engine: Engine) -> None:
    config = {"tasks": {"t": {"after": ["a"], "run": "N"}}}
    key = Idempotency("k5", "fp")
    first = await engine.configure("i:5", config, idempotency=key)
    assert await engine.configure("i:5", config, idempotency=key) == first
    assert (await engine.snapshot("i:5")).version == 1
    gone = Idempotency("k6", "fp")
    assert await engine.delete("i:5", idempotency=gone) is True
    assert await engine.delete("i:5", idempotency=gone) is True  # the stored answer
    assert await engine.delete("i:5") is False
