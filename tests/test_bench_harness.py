"""The benchmark harness (bench/run.py) reads wrk right, judges goals right, and says in one
line how to install wrk when it is missing. The measurements themselves live in bench/."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from bench.fire_wrk import parse
from bench.table import Row, render

ROOT = Path(__file__).resolve().parent.parent

WRK_OUTPUT = """Running 1s test @ http://127.0.0.1:18777/
  1 threads and 4 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     2.80ms    2.30ms  17.52ms   87.69%
    Req/Sec     1.59k   358.34     2.07k    70.00%
  Latency Distribution
     50%  812.00us
     75%    3.03ms
     90%    5.59ms
     99%    1.21s
  1580 requests in 1.03s, 856.35KB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 7
Requests/sec:   1539.96
Transfer/sec:    834.65KB
"""


def test_wrk_output_gives_rate_percentiles_and_every_failure() -> None:
    result = parse(WRK_OUTPUT)
    assert result.rate == 1539.96
    assert result.p50_ms == 0.812
    assert result.p99_ms == 1210.0
    assert result.bad == 10


def test_the_table_judges_the_median_of_per_round_ratios() -> None:
    row = Row("fire", "/s", [50, 90, 80], [100, 100, 100], ">= 0.85", lambda r: r >= 0.85)
    missed = Row("flat", "ms", [1.0, 1.5, 1.3], [1.0, 1.0, 1.0], "<= 1.2", lambda r: r <= 1.2)
    absent = Row("memory", "B", [], goal="<= 1,000", text="not measured")
    lines = render([row, missed, absent]).splitlines()
    assert lines[2].split()[-1] == "NO"  # median ratio 0.8
    assert "0.80" in lines[2] and "0.50-0.90 (n=3)" in lines[2]
    assert lines[3].split()[-1] == "NO"  # median ratio 1.3
    assert lines[4].endswith("not measured")


def test_without_wrk_the_harness_says_how_to_install_it(tmp_path: Path) -> None:
    env = {**os.environ, "PATH": str(tmp_path)}  # no wrk there
    run = subprocess.run([sys.executable, "-m", "bench", "--only", "fire"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert run.returncode != 0
    assert run.stderr.strip().splitlines() == [
        "bench: wrk not found (the HTTP load generator): sudo apt-get install wrk"
    ]
