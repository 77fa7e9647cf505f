"""What metrics and logs cost, counted in instructions: repeatable on a busy machine.

bench/observability.py measures CPU time per fire, which swings by tens of percent per round on
a shared 2-core machine. This script counts instructions instead (valgrind's callgrind counts
instructions, not seconds: the same figure whatever the neighbours do). Each mode of
bench/observability.py (``on``: as deployed; ``off``: the front layer's request ID, context
and metrics left out, metric recording no-ops, logs at WARNING) is served by the real app under
uvicorn inside ``valgrind --tool=callgrind``; after a warm-up the counters are zeroed
(``callgrind_control -z``), a fixed number of fires is sent one after the other over loopback,
and the counters dumped (``callgrind_control -d``): instructions per fire, the server's whole
process (event loop, HTTP parsing, FastAPI, the engine's Redis round trip).
Goal (issue 10): overhead under 5 %.

Run: ``.venv/bin/python bench/observability_instructions.py [--fires 300]`` (needs valgrind,
Debian's package; about two minutes).
"""

from __future__ import annotations

import argparse
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.api import wait_ready
from service.redis_server import RedisServer, free_port

OBSERVABILITY = Path(__file__).resolve().parent / "observability.py"
_TOTAL = re.compile(rb"^(?:summary|totals):\s+(\d+)", re.M)


def fire(client: httpx.Client, port: int, count: int) -> None:
    for n in range(count):
        answer = client.post(
            f"http://127.0.0.1:{port}/sessions/bench-obs-{n % 16}/fire", json={"trigger": "go"}
        )
        answer.raise_for_status()


def dumped_total(directory: str, pid: int) -> int:
    """The instruction total of the newest dump of ``pid`` (callgrind names them out.<pid>.N)."""
    dumps = sorted(glob.glob(os.path.join(directory, f"out.{pid}.*")), key=os.path.getmtime)
    if not dumps:
        raise RuntimeError("callgrind wrote no dump")
    found = _TOTAL.search(Path(dumps[-1]).read_bytes())
    if found is None:
        raise RuntimeError(f"no total in {dumps[-1]}")
    return int(found.group(1))


def instructions_per_fire(url: str, mode: str, fires: int, warmup: int) -> float:
    port = free_port()
    with tempfile.TemporaryDirectory() as directory, ExitStack() as stack:
        child = subprocess.Popen(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={directory}/out.%p",
             sys.executable, str(OBSERVABILITY), "--serve", url, "--port", str(port),
             "--mode", mode],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        stack.callback(child.wait)
        stack.callback(child.terminate)
        wait_ready(port, seconds=300, child=child)  # callgrind: some 50 times slower
        with httpx.Client(timeout=60) as client:
            fire(client, port, warmup)
            subprocess.run(["callgrind_control", "-z", str(child.pid)], check=True,
                           capture_output=True)  # fmt: skip
            fire(client, port, fires)
            subprocess.run(["callgrind_control", "-d", str(child.pid)], check=True,
                           capture_output=True)  # fmt: skip
        return dumped_total(directory, child.pid) / fires


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--fires", type=int, default=300, help="counted fires per mode")
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds")
    args = parser.parse_args()
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        sys.exit("bench: valgrind not found: sudo apt-get install valgrind")
    counts: dict[str, list[float]] = {"on": [], "off": []}
    with RedisServer() as redis:
        for _ in range(args.rounds):
            for mode in counts:
                counts[mode].append(instructions_per_fire(redis.url, mode, args.fires,
                                                          args.warmup))  # fmt: skip
    for mode, values in counts.items():
        print(f"{mode:<4} instructions per fire: {min(values):,.0f} "
              f"(rounds: {', '.join(f'{v:,.0f}' for v in values)})")  # fmt: skip
    overhead = min(counts["on"]) / min(counts["off"]) - 1
    print(f"\nobservability as deployed (on) against off: {overhead:+.1%} instructions per fire "
          f"(goal < 5 %); {args.fires} fires per round, one after the other, least of "
          f"{args.rounds} rounds")  # fmt: skip


if __name__ == "__main__":
    main()
