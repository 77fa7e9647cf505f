"""Backing off from a dependency that is away, and saying so in one line.

A worker whose Redis is unreachable wrote a full traceback every sweep interval (60 in 30 s);
the traceback says nothing the message does not (the message names the address), and trying
every interval helps nobody. Loops that must keep trying use ``Backoff`` and log ``one_line``.
"""

from __future__ import annotations

MAX_BACKOFF_SECONDS = 60.0


class Backoff:
    """Delays that double after each consecutive failure, from the sweep interval up to a
    minute: a worker whose Redis is away logs a line per try, not a traceback per interval
    (one such worker wrote 60 tracebacks in 30 s)."""

    def __init__(self, first: float) -> None:
        self.first = first
        self.current = first

    def next_delay(self) -> float:
        delay = self.current
        self.current = min(self.current * 2, max(self.first, MAX_BACKOFF_SECONDS))
        return delay

    def reset(self) -> None:
        self.current = self.first


def one_line(error: BaseException) -> str:
    """The error's type and message on one line (the traceback says nothing new when Redis
    is unreachable; the message names the address)."""
    text = " ".join(str(error).split()) or "no message"
    return f"{type(error).__name__}: {text}"
