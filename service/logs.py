"""Structured logs (structlog): one event per line, JSON in production, text on a terminal.

``TRIGGERS_LOG_FORMAT=json`` writes one JSON object per line (``timestamp``, ``level``,
``logger``, ``event`` and the context fields); ``console`` (the default) writes text lines as
before (``time LEVEL logger message``) with the context fields appended as ``key=value``.
Every ``logging`` call of the service and its libraries (uvicorn, dramatiq) goes through the
same formatter, so there is one format per process.

Context fields come from context variables bound where the work is known, and ride along with
every line logged meanwhile (asyncio tasks copy them, so concurrent requests never mix):
``request_id`` (the API, from ``X-Request-ID``), ``uid``, ``trigger``, ``task``, ``instance``,
``attempt`` (the worker, per run), and ``trace_id`` when a trace is being recorded. They live
in ONE context variable holding a small dict, replaced (never changed in place) on every bind:
binding a request's fields is one ``ContextVar.set``, and nothing is formatted unless a line is
actually logged. structlog's own contextvars helpers keep one variable per key and copy the
whole context to clear or read them: a tenth of the per-request cost of observability
(bench/observability.py).

Never logged: secrets, request bodies, kwargs or results (their sizes are, where useful).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token
from datetime import UTC, datetime
from typing import Any

import orjson
import structlog
from structlog.typing import EventDict, WrappedLogger

from service import tracing

__all__ = [
    "bind_contextvars", "bound_contextvars", "clear_contextvars", "configure", "get_contextvars",
    "request_context", "reset_context",
]  # fmt: skip

FORMATS = ("json", "console")

_FIELDS: ContextVar[dict[str, Any]] = ContextVar("triggers_log_fields", default={})  # noqa: B039
"""The context fields of the current task or thread. The dict is never changed in place (every
bind sets a new one), so the shared empty default and a copied context are safe."""


def get_contextvars() -> dict[str, Any]:
    """The context fields bound now (a copy)."""
    return dict(_FIELDS.get())


def bind_contextvars(**fields: Any) -> None:
    """Add fields to every line logged from now on in this task or thread."""
    _FIELDS.set({**_FIELDS.get(), **fields})


def clear_contextvars() -> None:
    """Forget every bound field (in this task or thread)."""
    _FIELDS.set({})


@contextmanager
def bound_contextvars(**fields: Any) -> Iterator[None]:
    """Fields added for the duration of the block; on exit the fields are as before it."""
    token = _FIELDS.set({**_FIELDS.get(), **fields})
    try:
        yield
    finally:
        _FIELDS.reset(token)


def request_context(fields: dict[str, Any]) -> Token[dict[str, Any]]:
    """Bind exactly ``fields`` (what an earlier request of a kept-alive connection bound is
    dropped): one ``ContextVar.set``. Hand the token to ``reset_context`` when it ends."""
    return _FIELDS.set(fields)


def reset_context(token: Token[dict[str, Any]]) -> None:
    _FIELDS.reset(token)


def merge_context(logger: WrappedLogger, method: str, event: EventDict) -> EventDict:
    """structlog processor: the bound fields, under the event's own (the event wins)."""
    for key, value in _FIELDS.get().items():
        event.setdefault(key, value)
    return event


def add_trace_id(logger: WrappedLogger, method: str, event: EventDict) -> EventDict:
    """The current trace's id, when OpenTelemetry is in use (never imported just for this)."""
    trace = sys.modules.get("opentelemetry.trace") if tracing.ENABLED else None
    if trace is not None:
        context = trace.get_current_span().get_span_context()
        if context.is_valid:
            event.setdefault("trace_id", format(context.trace_id, "032x"))
    return event


def configure(level: int = logging.INFO, log_format: str | None = None) -> None:
    """Route every ``logging`` record of this process through structlog's formatter."""
    chosen = (log_format or os.environ.get("TRIGGERS_LOG_FORMAT") or "console").lower()
    shared: list[Any] = [
        merge_context,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.stdlib.ExtraAdder(),
        add_trace_id,
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer(serializer=_dumps)
        if chosen == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info if chosen == "json" else _keep,
            renderer,
        ],
    )
    handler = logging.StreamHandler()
    handler.setFormatter(JsonLines(formatter) if chosen == "json" else ConsoleLines(formatter))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )


STANDARD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message", "asctime", "taskName", "color_message",
}  # fmt: skip


class JsonLines(logging.Formatter):
    """JSON lines for ``logging`` records, the same fields structlog's chain would give, built
    directly: this runs once per request (the access log), where the generic chain cost a
    tenth of a fire's CPU time (bench/observability.py). Records of structlog loggers go
    through structlog's own formatter."""

    def __init__(self, structured: logging.Formatter) -> None:
        super().__init__()
        self.structured = structured

    def format(self, record: logging.LogRecord) -> str:
        if isinstance(record.msg, dict):  # from a structlog logger
            return self.structured.format(record)
        moment = datetime.fromtimestamp(record.created, tz=UTC)
        event: dict[str, Any] = {
            "timestamp": moment.isoformat().replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        event.update(_FIELDS.get())
        for key, value in vars(record).items():
            if key not in STANDARD_ATTRIBUTES:
                event[key] = value
        add_trace_id(None, "", event)
        if record.exc_info:
            event["exception"] = self.formatException(record.exc_info)
        return _dumps(event)


class ConsoleLines(logging.Formatter):
    """Text lines as before structured logs (``time LEVEL logger message``), with the context
    fields appended as ``key=value``; records of structlog loggers use structlog's renderer."""

    def __init__(self, structured: logging.Formatter) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")
        self.structured = structured

    def format(self, record: logging.LogRecord) -> str:
        if isinstance(record.msg, dict):  # from a structlog logger
            return self.structured.format(record)
        line = super().format(record)
        fields = dict(_FIELDS.get())
        fields.update((k, v) for k, v in vars(record).items() if k not in STANDARD_ATTRIBUTES)
        add_trace_id(None, "", fields)
        if not fields:
            return line
        head, newline, rest = line.partition("\n")  # a traceback stays below the fields
        pairs = " ".join(f"{key}={value}" for key, value in fields.items())
        return f"{head} {pairs}{newline}{rest}"


def _keep(logger: WrappedLogger, method: str, event: EventDict) -> EventDict:
    return event


def _dumps(event: Any, **options: Any) -> str:
    """orjson: several times faster than json.dumps on the per-line path."""
    return orjson.dumps(event, default=str).decode()
