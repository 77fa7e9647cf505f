"""OpenTelemetry traces, only when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set (no cost otherwise:
nothing of OpenTelemetry is imported, every hook returns at its first line).

One trace follows a fire: the API's request span (FastAPI instrumentation) with its Redis
calls, the Dramatiq message (its ``trace`` option carries the W3C ``traceparent``), the worker's
``run_instance`` span that continues it, the task's HTTP call (httpx instrumentation sends
``traceparent`` on to the endpoint), the cascade's next messages and the webhook deliveries.

Redis is instrumented on the engine's clients only (not the broker's polling), and root spans
are kept only for entry points (server and consumer spans): background loops (the sweeper,
heartbeats) start no traces of their own. A message re-sent by the sweeper carries no context
(the outbox keeps none): its run starts a new trace.

The exporter is OTLP over HTTP/protobuf, configured by the standard ``OTEL_*`` variables
(``OTEL_EXPORTER_OTLP_ENDPOINT``, ``OTEL_SERVICE_NAME``, ``OTEL_BSP_SCHEDULE_DELAY``, ...).
"""

from __future__ import annotations

import contextvars
import os
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

ENABLED = bool(os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"))
OPTION = "trace"
"""The Dramatiq message option holding the W3C trace context (``traceparent``)."""
_carrier: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar(
    "triggers_trace_carrier", default=None
)
_configured = False


def setup(service_name: str) -> None:
    """The process's tracer provider, exporting with OTLP/HTTP (once per process)."""
    global _configured
    if not ENABLED or _configured:
        return
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    name = os.environ.get("OTEL_SERVICE_NAME") or service_name
    provider = TracerProvider(resource=Resource.create({"service.name": name}),
                              sampler=entry_point_sampler())  # fmt: skip
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    _configured = True


def entry_point_sampler() -> Any:
    """Follow the parent's decision; without a parent, keep only server and consumer spans."""
    from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult
    from opentelemetry.trace import SpanKind, get_current_span

    class EntryPoints(Sampler):
        def should_sample(self, parent_context: Any, trace_id: int, name: str,
                          kind: Any = None, attributes: Any = None, links: Any = None,
                          trace_state: Any = None) -> SamplingResult:  # fmt: skip
            parent = get_current_span(parent_context).get_span_context()
            if parent.is_valid:
                sampled = parent.trace_flags.sampled
            else:
                sampled = kind in (SpanKind.SERVER, SpanKind.CONSUMER)
            decision = Decision.RECORD_AND_SAMPLE if sampled else Decision.DROP
            return SamplingResult(decision, attributes)

        def get_description(self) -> str:
            return "EntryPoints"

    return EntryPoints()


def instrument_app(app: Any) -> None:
    if not ENABLED:
        return
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    setup("triggers-api")
    FastAPIInstrumentor.instrument_app(app, excluded_urls="/livez,/healthz,/readyz,/metrics")


def instrument_redis(client: Any) -> None:
    if not ENABLED:
        return
    from opentelemetry.instrumentation.redis import RedisInstrumentor

    RedisInstrumentor.instrument_client(client)


def instrument_httpx(client: Any) -> None:
    if not ENABLED:
        return
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

    HTTPXClientInstrumentor.instrument_client(client)


def message_options() -> dict[str, Any]:
    """Options for an outgoing Dramatiq message: the current trace context, if any."""
    if not ENABLED:
        return {}
    from opentelemetry import propagate

    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return {OPTION: carrier} if carrier else {}


def received(options: dict[str, Any]) -> None:
    """The trace context of the message being processed (a middleware hook, worker thread)."""
    if ENABLED:
        carrier = options.get(OPTION)
        _carrier.set(carrier if isinstance(carrier, dict) else None)


def consuming(name: str, **attributes: str) -> Any:
    """A consumer span continuing the message's trace (a no-op context when disabled)."""
    if not ENABLED:
        return nullcontext()
    return _consuming(name, attributes)


@contextmanager
def _consuming(name: str, attributes: dict[str, str]) -> Iterator[None]:
    from opentelemetry import propagate, trace

    parent = propagate.extract(_carrier.get() or {})
    tracer = trace.get_tracer("triggers.worker")
    with tracer.start_as_current_span(name, context=parent, kind=trace.SpanKind.CONSUMER,
                                      attributes=attributes):  # fmt: skip
        yield
