"""Test helpers: a tiny in-test "worker" that runs scheduled instances through the engine.

Tasks in SEMANTICS.md's worked examples are named by what they do: ``P`` returns
``{"kwargs": <what it received>}``, ``N`` returns ``{}``, ``X`` fails with RuntimeError.
``settle`` claims and finishes every scheduled instance, and the ones their cascades schedule,
until nothing is left to run: "waiting for all work to settle after each step" (section N).
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from service.engine import Claim, Engine

Behaviour = Callable[[Engine, str, str, Claim], Awaitable[None]]


async def behave_p(engine: Engine, uid: str, name: str, claim: Claim) -> None:
    assert claim.token is not None
    await engine.complete(uid, name, claim.token, {"kwargs": claim.kwargs})


async def behave_n(engine: Engine, uid: str, name: str, claim: Claim) -> None:
    assert claim.token is not None
    await engine.complete(uid, name, claim.token, {})


async def behave_x(engine: Engine, uid: str, name: str, claim: Claim) -> None:
    assert claim.token is not None
    await engine.fail(uid, name, claim.token, "builtins.RuntimeError", "Traceback: boom", {})


BEHAVIOURS: dict[str, Behaviour] = {"P": behave_p, "N": behave_n, "X": behave_x}


async def settle(
    engine: Engine,
    uid: str,
    behaviours: dict[str, Behaviour] | None = None,
    *,
    max_runs: int = 500,
) -> list[str]:
    """Run every due scheduled instance until none is left; returns the names run, in order.

    The behaviour is chosen by the task's ``run`` (P, N, X, or keys of ``behaviours``).
    Instances still cooling down (claim answers not_due) are left scheduled.
    """
    table = {**BEHAVIOURS, **(behaviours or {})}
    ran: list[str] = []
    skipped: set[str] = set()
    while len(ran) < max_runs:
        pending = [
            instance.name
            for instance in await engine.instances(uid, status="scheduled")
            if instance.name not in skipped
        ]
        if not pending:
            return ran
        for name in pending:
            claim = await engine.claim(uid, name)
            if claim.state != "claimed":
                skipped.add(name)
                continue
            assert claim.task is not None, f"{name}: task not configured"
            await table[claim.task.run](engine, uid, name, claim)
            ran.append(name)
    raise AssertionError(f"more than {max_runs} runs: a loop?")


def statuses(instances: dict[str, Any]) -> dict[str, str]:
    """{name: status} of a snapshot's instances."""
    return {name: instance.status for name, instance in instances.items()}


@contextmanager
def installed_plugin(
    folder: Path, module: str, source: str, group: str, entry: str
) -> Iterator[None]:
    """A real installed-distribution layout on sys.path: ``module.py`` holding ``source`` and a
    dist-info whose entry_points.txt declares ``entry`` (``name = module:attr``) in ``group``."""
    (folder / f"{module}.py").write_text(source)
    dist = folder / f"{module}-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(f"[{group}]\n{entry}\n")
    sys.path.insert(0, str(folder))
    try:
        yield
    finally:
        sys.path.remove(str(folder))
        sys.modules.pop(module, None)
