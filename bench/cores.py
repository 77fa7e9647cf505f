"""More cores: fire requests per second through `triggers serve --workers 1` vs `--workers 2`.

Both services run at once (each with its own embedded Redis and in-process worker, access log
off: ``--log-level warning``), and wrk (/usr/bin/wrk, one thread, keep-alive connections,
POST fire from a Lua script over 16 sessions) drives one, then the other, in alternating
rounds (the order flips each round), so a drift of a shared machine hits both alike. The fire
is a real one: its session has a task waiting for that trigger and another, so every fire
runs the fire script and stores its kwargs, and schedules nothing (no worker load mixed in).

Prints req/s, p50 and p99 per round and their medians, the whole service's CPU per fire (API
processes, worker and Redis: what a second process costs, steadier than req/s when other
work shares the cores), how many fires each API process of `--workers 2` took (from its own
metrics port: is the load shared?), the ratio 2 processes / 1 per round
(median and spread), and the machine's CPU count and load average (wrk shares the cores).
Run: ``.venv/bin/python bench/cores.py [--seconds 8] [--rounds 5] [--connections 32]``.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from service.redis_server import free_port, free_ports

SESSIONS = 16
LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"trigger": "applicant", "kwargs": {"page": 3, "responses": {"q1": "yes"}}}'
local n = 0
request = function()
  n = n + 1
  return wrk.format(nil, "/sessions/bench:cores:" .. (n % SESSIONS) .. "/fire")
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT %d %d %d %d %d\\n", summary.requests, summary.duration,
    e.connect + e.read + e.write + e.status + e.timeout, latency:percentile(50),
    latency:percentile(99)))
end
"""


@dataclass
class Round:
    rate: float
    p50_ms: float
    p99_ms: float
    errors: int
    cpu_ms: float = 0.0  # the whole serve's CPU (API processes, worker, Redis) per fire


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU of ``pid`` and its descendants so far (Linux /proc)."""
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        todo.extend(int(child) for child in children)
    return total


def start(processes: int, folder: Path, metrics_port: int) -> tuple[subprocess.Popen[bytes], int]:
    """A `triggers serve --workers N` on a free port, ready."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIGGERS_")}
    env.update({"TRIGGERS_AUTH": "off", "TRIGGERS_DATA_DIR": str(folder),
                "TRIGGERS_METRICS_PORT": str(metrics_port)})  # fmt: skip
    process = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "serve", "--port", str(port), "--workers",
         str(processes), "--log-level", "warning"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                time.sleep(1 + processes)  # every API process up (readyz needs only one)
                return process, port
        except httpx.HTTPError:
            pass
        if process.poll() is not None:
            break
        time.sleep(0.2)
    raise SystemExit(f"triggers serve --workers {processes} did not start")


def prepare(port: int) -> None:
    config = {"tasks": {"t_page": {"after": ["applicant", "never"], "run": "P"}}}
    with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
        for i in range(SESSIONS):
            client.put(f"/sessions/bench:cores:{i}/config", json=config).raise_for_status()


def wrk(port: int, script: Path, seconds: float, connections: int, pid: int = 0) -> Round:
    cpu = tree_cpu_seconds(pid) if pid else 0.0
    done = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "-s", str(script),
         f"http://127.0.0.1:{port}"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    found = re.search(r"^RESULT (\d+) (\d+) (\d+) (\d+) (\d+)$", done.stdout, re.MULTILINE)
    if found is None:
        raise SystemExit(f"wrk printed no result:\n{done.stdout}\n{done.stderr}")
    requests, micros, errors, p50, p99 = map(int, found.groups())
    cpu_ms = (tree_cpu_seconds(pid) - cpu) * 1000 / requests if pid and requests else 0.0
    return Round(requests / (micros / 1e6), p50 / 1000, p99 / 1000, errors, cpu_ms)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=8, help="per service per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk not found (Debian: apt-get install wrk)")
    load_before = os.getloadavg()
    with ExitStack() as stack:
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-cores-")))
        script = folder / "fire.lua"
        script.write_text(LUA.replace("SESSIONS", str(SESSIONS)))
        ports, pids, metrics = {}, {}, {}
        for n in (1, 2):
            metrics[n] = free_ports(n + 1)  # per process: the fires each API process took
            process, ports[n] = start(n, folder / f"data{n}", metrics[n])
            pids[n] = process.pid
            stack.callback(process.wait, 60)
            stack.callback(process.send_signal, signal.SIGTERM)
            prepare(ports[n])
            wrk(ports[n], script, 2, args.connections)  # warm-up
        runs: dict[int, list[Round]] = {1: [], 2: []}
        for r in range(args.rounds):
            for n in (1, 2) if r % 2 == 0 else (2, 1):
                runs[n].append(wrk(ports[n], script, args.seconds, args.connections, pids[n]))
        report(runs, args, load_before)
        print(f"fires per API process of --workers 2: {', '.join(fires_taken(metrics[2], 2))}")


def fires_taken(metrics_port: int, processes: int) -> list[str]:
    """The fires each API process answered (its own metrics port): is the load shared?"""
    counts = []
    for i in range(processes):
        url = f"http://127.0.0.1:{metrics_port + 1 + i}/metrics"
        found = re.findall(r"^triggers_fires_total\{[^}]*\} (\S+)$", httpx.get(url).text, re.M)
        counts.append(f"{sum(float(x) for x in found):.0f}")
    return counts


def report(
    runs: dict[int, list[Round]], args: argparse.Namespace, load_before: tuple[float, ...]
) -> None:
    print(f"{'API processes':<14} {'req/s per round':<44} {'median':>8} {'p50 ms':>7} "
          f"{'p99 ms':>7} {'errors':>6} {'CPU ms/fire':>11}")  # fmt: skip
    for n, rounds in runs.items():
        rates = " ".join(f"{r.rate:7.0f}" for r in rounds)
        print(f"{n:<14} {rates:<44} {statistics.median(r.rate for r in rounds):8.0f} "
              f"{statistics.median(r.p50_ms for r in rounds):7.1f} "
              f"{statistics.median(r.p99_ms for r in rounds):7.1f} "
              f"{sum(r.errors for r in rounds):6d} "
              f"{statistics.median(r.cpu_ms for r in rounds):11.2f}")  # fmt: skip
    ratios = [two.rate / one.rate for one, two in zip(runs[1], runs[2], strict=True)]
    print(f"\n2 / 1 processes per round: {', '.join(f'{x:.2f}' for x in ratios)}")
    print(f"2 / 1 processes: median {statistics.median(ratios):.2f} (spread "
          f"{min(ratios):.2f}-{max(ratios):.2f}) over {args.rounds} alternating rounds of "
          f"{args.seconds:g} s, wrk -t1 -c{args.connections}")  # fmt: skip
    cpu = [two.cpu_ms / one.cpu_ms for one, two in zip(runs[1], runs[2], strict=True)]
    print(
        f"CPU per fire, 2 / 1 processes (the cost of the second process; steadier than "
        f"req/s on a shared machine): median {statistics.median(cpu):.2f}"
    )
    print(f"machine: {os.cpu_count()} CPUs shared with wrk and Redis; load average "
          f"{load_before[0]:.1f} before, {os.getloadavg()[0]:.1f} after")  # fmt: skip


if __name__ == "__main__":
    main()
