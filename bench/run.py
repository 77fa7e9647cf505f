"""The benchmark harness: every measure of issue 11 in ONE table, ours against a bare reference.

Rows (each section starts its own redis-server and processes, on loopback):

* fire: fire requests/s through the real app (one uvicorn worker) / a bare FastAPI endpoint
  doing one EVALSHA in the same stack, and / a floor endpoint doing that EVALSHA and one
  batched Dramatiq enqueue (what any request that schedules work must do), wrk as load
  generator (bench/fire_wrk.py);
* pipeline: tasks/s through ``triggers serve`` -> ``triggers worker`` -> a no-op Python task
  and a no-op HTTP task on a loopback server / a bare Dramatiq actor doing the same, with the
  same 8 threads and poll, plus worker CPU, Redis CPU and EVALSHA per task (bench/pipeline.py);
* latency: fire answer -> HTTP task arrival p50/p99 / bare Dramatiq send -> arrival
  (bench/e2e.py);
* flatness: fire median at 50,000 instances / at 10 (bench/flatness.py);
* memory: bytes per session and per finished instance (bench/memory.py when present);
* sweep: a sweep pass at 100,000 pending sessions (bench/sweeper.py).

Ours and the reference run in alternating rounds, so a drift of the (shared) machine hits both
alike; the table shows both medians, the median of the per-round ratios, its spread (min-max
over the rounds) and the goal. Run: ``.venv/bin/python -m bench [--quick] [--only a,b]``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a file: bench/run.py
    sys.path.insert(0, str(ROOT))

from bench.table import Row, render  # noqa: E402

SECTIONS = ("fire", "pipeline", "latency", "flatness", "memory", "sweep")


@dataclass(frozen=True)
class Plan:
    """How much of each measure to run: the default, or ``--quick`` (about two minutes)."""

    fire_rounds: int = 5
    fire_seconds: float = 4
    connections: int = 32
    pipeline_rounds: int = 5  # one drain of ours swung 0.4-1.0 of bare between identical
    pipeline_tasks: int = 2000  # rounds on this 2-core VM: five longer drains, steadier median
    latency_samples: int = 300  # both sides wait out a 10-20 ms idle poll: 100 left ±0.15
    flat_size: int = 50_000
    flat_rounds: int = 5
    flat_batch: int = 100
    memory_args: tuple[str, ...] = ()
    sweep_pending: int = 100_000
    sweep_due: int = 1000
    sweep_rounds: int = 3


QUICK = Plan(fire_rounds=3, fire_seconds=2, pipeline_rounds=2, pipeline_tasks=300,
             latency_samples=30, flat_size=10_000, flat_rounds=3, flat_batch=50,
             memory_args=("--instances", "2000"), sweep_due=200, sweep_rounds=2)  # fmt: skip


def fire_rows(plan: Plan, _: dict[str, float]) -> list[Row]:
    from bench.fire_wrk import measure

    return measure(plan.fire_rounds, plan.fire_seconds, plan.connections)


def pipeline_rows(plan: Plan, _: dict[str, float]) -> list[Row]:
    from bench.pipeline import measure

    return measure(plan.pipeline_rounds, plan.pipeline_tasks)


def _blocks(values: list[float], count: int = 5) -> list[list[float]]:
    size = max(1, len(values) // count)
    return [values[i : i + size] for i in range(0, size * count, size) if values[i : i + size]]


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def latency_rows(plan: Plan, _: dict[str, float]) -> list[Row]:
    """bench/e2e.py's samples (ours and bare alternate one by one); the spread is over five
    consecutive blocks of them."""
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "e2e.py"), "--json",
         "--samples", str(plan.latency_samples)],
        capture_output=True, text=True, check=True, cwd=ROOT,
    )  # fmt: skip
    found = json.loads(out.stdout.strip().splitlines()[-1])
    ours, bare, chain = found["fire_to_task"], found["bare"], found["chain"]
    medians = [statistics.median(b) for b in _blocks(ours)]
    bare_medians = [statistics.median(b) for b in _blocks(bare)]
    return [
        Row("fire -> HTTP task p50 / bare Dramatiq send -> actor", "ms", medians, bare_medians,
            "<= 1.3", lambda r: r <= 1.3),
        Row("  fire -> HTTP task p99 (info)", "ms", [_p99(ours)], [_p99(bare)]),
        Row("  chain of 10 Python tasks -> HTTP task, per hop p50 (info)", "ms",
            [statistics.median(chain) / 11]),
    ]  # fmt: skip


def flatness_rows(plan: Plan, shared: dict[str, float]) -> list[Row]:
    from bench.flatness import measure

    rows, per_instance = measure(plan.flat_size, plan.flat_rounds, plan.flat_batch)
    shared["bytes_per_instance"] = per_instance
    return rows


def _meets(goal: str) -> Callable[[float], bool] | None:
    match = re.fullmatch(r"\s*(<=|>=)\s*([\d,.]+)\s*", goal)
    if not match:
        return None
    bound = float(match.group(2).replace(",", ""))
    if match.group(1) == "<=":
        return lambda value: value <= bound
    return lambda value: value >= bound


def memory_rows(plan: Plan, shared: dict[str, float]) -> list[Row]:
    """bench/memory.py's rows that carry a goal; without it (not merged yet): bytes per
    unstarted instance from the flatness sessions, and the session row not measured."""
    script = ROOT / "bench" / "memory.py"
    if script.exists():
        out = subprocess.run([sys.executable, str(script), "--json", *plan.memory_args],
                             capture_output=True, text=True, check=True, cwd=ROOT)  # fmt: skip
        found = json.loads(out.stdout.strip().splitlines()[-1])["rows"]
        return [Row(r["name"], "B", [float(r["value"])], goal=r["goal"], meets=_meets(r["goal"]))
                for r in found if r.get("goal")]  # fmt: skip
    rows = [Row("memory: one-task session after two fires", "B", [], goal="<= 1,000",
                text="not measured (no bench/memory.py)")]  # fmt: skip
    if "bytes_per_instance" in shared:
        rows.append(Row("memory: per unstarted instance, kwargs included (flatness session)",
                        "B", [shared["bytes_per_instance"]],
                        goal="(<= 300 + kwargs, finished)"))  # fmt: skip
    return rows


def sweep_rows(plan: Plan, _: dict[str, float]) -> list[Row]:
    from bench.sweep import measure

    return measure(plan.sweep_pending, plan.sweep_due, plan.sweep_rounds)


MEASURES: dict[str, Callable[[Plan, dict[str, float]], list[Row]]] = {
    "fire": fire_rows,
    "pipeline": pipeline_rows,
    "latency": latency_rows,
    "flatness": flatness_rows,
    "memory": memory_rows,
    "sweep": sweep_rows,
}


def failed(section: str, error: BaseException) -> Row:
    detail = error.stderr if isinstance(error, subprocess.CalledProcessError) else ""
    print(f"bench: {section} failed:\n{traceback.format_exc()}{detail or ''}", file=sys.stderr)
    return Row(f"{section}", "", [], text=f"failed: {type(error).__name__} (see stderr)")


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="a short run (about two minutes)")
    parser.add_argument("--only", default=",".join(SECTIONS),
                        help=f"comma-separated sections, of {','.join(SECTIONS)}")  # fmt: skip
    args = parser.parse_args()
    sections = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections {sorted(unknown)}; choose from {','.join(SECTIONS)}")
    if "fire" in sections:
        from bench.fire_wrk import require_wrk

        require_wrk()
    plan = QUICK if args.quick else Plan()
    load = os.getloadavg()[0]
    started = time.monotonic()
    rows: list[Row] = []
    shared: dict[str, float] = {}
    for section in sections:
        print(f"bench: {section} ...", file=sys.stderr, flush=True)
        began = time.monotonic()
        try:
            rows += MEASURES[section](plan, shared)
        except Exception as error:
            rows.append(failed(section, error))
        print(f"bench: {section} done in {time.monotonic() - began:.0f} s", file=sys.stderr)
    print(render(rows))
    print(
        f"\nours and bare/ref: medians over rounds; ratio: median of per-round ratios; spread: "
        f"min-max of those ratios (of ours without a reference). {os.cpu_count()} CPUs, load "
        f"average {load:.1f} at start, {os.getloadavg()[0]:.1f} at end; "
        f"{time.monotonic() - started:.0f} s{' (--quick)' if args.quick else ''}."
    )


if __name__ == "__main__":
    main()
