"""Command-line start-up: how long `triggers --help` and a client command take, end to end.

The command line imports only the standard library at start and each command imports what it
needs (client commands: httpx), so neither FastAPI, uvicorn, dramatiq nor redis is loaded to
print help or to call the service. This prints the median wall time of N runs of each, and
of a bare ``python -c pass`` for reference. The client command calls a port where nothing
listens (it fails at once with exit code 3), so only start-up is measured.

Goal (issue 8, item 10): well under the ~0.9 s it took when cli.py imported the whole service.
Run: ``.venv/bin/python bench/cli_start.py [--runs 10]``.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

from service.redis_server import free_port


def median_seconds(command: list[str], runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(command, capture_output=True, check=False)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=10)
    runs = parser.parse_args().runs
    url = f"http://127.0.0.1:{free_port()}"
    commands = {
        "python -c pass": [sys.executable, "-c", "pass"],
        "triggers --help": [sys.executable, "-m", "service.cli", "--help"],
        "triggers show (no service)": [sys.executable, "-m", "service.cli", "show", "--url", url,
                                       "applicant:1"],
    }  # fmt: skip
    for name, command in commands.items():
        print(f"{name:30s} median {median_seconds(command, runs) * 1000:7.0f} ms ({runs} runs)")


if __name__ == "__main__":
    main()
