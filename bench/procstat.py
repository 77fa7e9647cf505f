"""CPU time of a process tree and pausing it, from /proc and signals (Linux).

The pipeline rows charge each task the CPU its worker processes (``triggers worker`` is a
parent with spawned children) and Redis spent; SIGSTOP holds a worker while its queue is
filled, so the drain that follows measures the worker alone, with a full queue.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")


def tree(pid: int) -> list[int]:
    """``pid`` and all its descendants alive now."""
    found = [pid]
    for parent in found:  # grows while iterating: breadth-first
        for task in Path(f"/proc/{parent}/task").glob("*"):
            try:
                found += [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                continue
    return found


def cpu_seconds(pid: int) -> float:
    """User + system CPU of ``pid`` and its descendants so far."""
    total = 0.0
    for member in tree(pid):
        try:
            fields = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / TICK
    return total


def pause(pid: int) -> None:
    for member in tree(pid):
        os.kill(member, signal.SIGSTOP)


def resume(pid: int) -> None:
    for member in tree(pid):
        os.kill(member, signal.SIGCONT)
