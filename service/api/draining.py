"""Draining after SIGTERM: /readyz turns 503 first, the listening socket closes later.

A load balancer (or Kubernetes' endpoints controller) only stops sending requests once it has
seen the readiness probe fail; a server that closes its socket at SIGTERM refuses the requests
still routed to it meanwhile. So on the first SIGTERM `triggers serve` sets ``DRAINING`` (the
readiness probe answers 503) and lets uvicorn's graceful shutdown begin only
``TRIGGERS_DRAIN_SECONDS`` later; requests keep being served in between. A second signal, or
SIGINT, stops at once as before.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType

import uvicorn

DRAINING = threading.Event()
"""Set on SIGTERM: /readyz answers 503 until the process exits."""


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, drain_seconds: float) -> None:
        super().__init__(config)
        self.drain_seconds = drain_seconds
        self.timer: threading.Timer | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if sig == signal.SIGTERM and not DRAINING.is_set():
            DRAINING.set()
            if self.drain_seconds > 0:
                self.timer = threading.Timer(self.drain_seconds, super().handle_exit, (sig, frame))
                self.timer.daemon = True
                self.timer.start()
                return
        if self.timer is not None:
            self.timer.cancel()
        super().handle_exit(sig, frame)
