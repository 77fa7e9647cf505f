"""Worker process middlewares: the heartbeat (service/heartbeat.py), started when the Dramatiq
worker boots and withdrawn on shutdown, and the trace context each message carries
(service/tracing.py)."""

from __future__ import annotations

import logging
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from dramatiq import Middleware

from service import tracing
from service.heartbeat import Heartbeat, fingerprint, sync_client
from service.settings import Settings

log = logging.getLogger(__name__)


def describe(settings: Settings) -> dict[str, Any]:
    """What a heartbeat says about this process (never the secret itself)."""
    from service.signing import deployment_secret

    try:
        release = version("triggers-service")
    except PackageNotFoundError:
        release = "unknown"
    return {"version": release, "secret": fingerprint(deployment_secret(settings))}


class HeartbeatMiddleware(Middleware):
    def __init__(self) -> None:
        self.heartbeat: Heartbeat | None = None

    def after_worker_boot(self, broker: object, worker: object) -> None:
        settings = Settings()
        try:
            info = describe(settings)
        except Exception as error:  # Redis away at boot: beat anyway, the fingerprint unknown
            log.warning("heartbeat: signing secret not read (%s)", error)
            info = {"secret": "unknown"}
        self.heartbeat = Heartbeat(sync_client(settings), settings.key_prefix, info,
                                   settings.heartbeat_interval)  # fmt: skip
        self.heartbeat.start()

    def before_worker_shutdown(self, broker: object, worker: object) -> None:
        if self.heartbeat is not None:
            self.heartbeat.stop()
            self.heartbeat = None


class TraceContextMiddleware(Middleware):
    """Hands each message's trace context to the actor (a context variable of the worker
    thread, which the actor's coroutine inherits); sets up tracing when made (the actors
    module is imported before the worker starts)."""

    def __init__(self) -> None:
        tracing.setup("triggers-worker")  # before any worker thread takes a message

    def before_process_message(self, broker: object, message: Any) -> None:
        tracing.received(message.options)
