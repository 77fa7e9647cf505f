"""A first end-to-end pass through the engine on both backends (N5 of SEMANTICS.md)."""

from service.engine import Engine


async def test_n5_cascade_absorbed_by_piled_up_instances(any_engine: Engine) -> None:
    engine = any_engine
    await engine.configure(
        "app:1",
        {
            "tasks": {
                "t_a": {"after": ["C"], "andEvery": "D", "run": "P"},
                "t_c": {"after": ["t_a"], "andEvery": "C", "run": "P"},
            }
        },
    )
    await engine.fire("app:1", "C", {"n": 1})
    await engine.fire("app:1", "C", {"n": 2})
    outcome = await engine.fire("app:1", "D", {"n": 3})
    assert outcome.scheduled == ["t_a#0"]
    claim = await engine.claim("app:1", "t_a#0")
    assert claim.state == "claimed" and claim.token
    done = await engine.complete("app:1", "t_a#0", claim.token, {"kwargs": claim.kwargs})
    assert done.scheduled == ["t_c#0", "t_c#1"]
    c0 = await engine.instance("app:1", "t_c#0")
    c1 = await engine.instance("app:1", "t_c#1")
    assert c0.kwargs["C"] == {"n": 1} and c1.kwargs["C"] == {"n": 2}
    assert c0.kwargs["t_a"] == {"kwargs": {"C": {"n": 1}, "D": {"n": 3}}}


async def test_settle_runs_cascades(any_engine: Engine) -> None:
    from tests.support import settle

    engine = any_engine
    await engine.configure(
        "s",
        {"tasks": {"t_a": {"after": ["D"], "run": "P"}, "t_b": {"after": ["t_a"], "run": "X"}}},
    )
    await engine.fire("s", "D")
    assert await settle(engine, "s") == ["t_a#0", "t_b#0"]
    snap = await engine.snapshot("s")
    assert snap.instances["t_b#0"].status == "failed"
    assert snap.instances["t_b#0"].metadata["exceptionType"] == "builtins.RuntimeError"
