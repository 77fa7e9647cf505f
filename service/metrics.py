"""Prometheus metrics: every series the service exports, defined once, in the default registry.

Naming follows Prometheus: base units (seconds), ``_total`` counters, no session UID or
instance name as a label (labels are small closed sets: outcome, task kind, script, route
template), so the number of series does not grow with the number of sessions.

Where they are served:

* the API: ``GET /metrics`` (the ``metrics`` API-key scope), with the deployment-wide gauges
  read at scrape time (``refresh_deployment_gauges``): broker queue depths and the pending
  index, one cheap read each (LLEN/ZCARD, never a keyspace scan). The in-process worker of
  ``triggers serve`` shares the process, so its series are in the same answer.
* each worker process: its own HTTP port (``TRIGGERS_METRICS_PORT`` + the process index),
  with the series of what that process ran. One port per process rather than
  prometheus-client's multiprocess mode: no shared directory to wipe, no file pile-up, and a
  killed process's series go with it (Prometheus' ``up`` tells it is gone).

Recording is a dictionary lookup and an add: cheap enough for the fire path (bench/metrics.py).
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Any, Literal

from prometheus_client import Counter, Gauge, Histogram, Info
from prometheus_client import start_http_server as _start_http_server

TaskKind = Literal["http", "python", "external"]
InstanceOutcome = Literal["finished", "failed", "retried", "skipped", "abandoned"]

FAST_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
"""Lua scripts and API requests: sub-millisecond to seconds."""
TASK_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900)
"""Tasks, waits and webhook attempts: milliseconds to the longest HTTP deadline."""

FIRES = Counter(
    "triggers_fires_total",
    "Fires by outcome: scheduled (the fire scheduled at least one instance), no_change, "
    "refused (invalid, conflicting or on a missing session).",
    ["outcome"],
)
INSTANCES = Counter(
    "triggers_instances_total",
    "Instances that reached an end (each counted once), by task kind and outcome.",
    ["task_kind", "outcome"],
)
SCHEDULE_TO_START = Histogram(
    "triggers_schedule_to_start_seconds",
    "From an instance being scheduled to its claim by a worker (first runs; a retry's clone "
    "waits out its cooldown on purpose and is not measured).",
    buckets=TASK_BUCKETS,
)
TASK_DURATION = Histogram(
    "triggers_task_duration_seconds",
    "How long a task ran in a worker (claim to its result).",
    ["task_kind"],
    buckets=TASK_BUCKETS,
)
OUTBOX_PENDING = Gauge(
    "triggers_outbox_pending",
    "Sessions in the pending index: with outbox entries, leases or webhook deliveries the "
    "sweeper watches (read at scrape time with ZCARD).",
)
OUTBOX_OVERDUE = Gauge(
    "triggers_outbox_overdue",
    "Sessions of the pending index whose attention time has passed (the sweeper is behind "
    "when this stays above zero).",
)
LEASES_ACTIVE = Gauge(
    "triggers_leases_active",
    "Instances this worker process holds a lease on and runs now (sum over workers).",
)
QUEUE_MESSAGES = Gauge(
    "triggers_queue_messages",
    "Broker messages by queue and state (ready, delayed, dead-lettered), read at scrape time.",
    ["queue", "state"],
)
SWEEPER_REDISPATCHED = Counter(
    "triggers_sweeper_redispatched_total",
    "Instances the sweeper handed to workers again: stranded (enqueue lost) or lease_expired "
    "(their worker died).",
    ["reason"],
)
WEBHOOK_DELIVERIES = Counter(
    "triggers_webhook_deliveries_total",
    "Webhook delivery attempts by event type and outcome (delivered, retrying, failed).",
    ["event", "outcome"],
)
WEBHOOK_ATTEMPT = Histogram(
    "triggers_webhook_attempt_duration_seconds",
    "One webhook delivery attempt (the HTTP request).",
    buckets=TASK_BUCKETS,
)
SESSIONS_FINALIZED = Counter(
    "triggers_sessions_finalized_total", "Sessions that reached finalization."
)
LUA_SCRIPT = Histogram(
    "triggers_lua_script_seconds",
    "Round trip of one engine Lua script call, by script.",
    ["script"],
    buckets=FAST_BUCKETS,
)
WORKERS_ALIVE = Gauge(
    "triggers_workers_alive", "Worker processes with a fresh heartbeat (read at scrape time)."
)
REDIS_MEMORY_USED = Gauge(
    "triggers_redis_memory_used_bytes",
    "used_memory of the state Redis (the node the API talks to), read at scrape time.",
)
REDIS_MEMORY_MAX = Gauge(
    "triggers_redis_maxmemory_bytes",
    "maxmemory of the state Redis (0: no limit), read at scrape time.",
)
HTTP_REQUESTS = Counter(
    "triggers_http_requests_total",
    "API requests by method, route template and status code.",
    ["method", "route", "status"],
)
HTTP_DURATION = Histogram(
    "triggers_http_request_duration_seconds",
    "API request latency by method and route template.",
    ["method", "route"],
    buckets=FAST_BUCKETS,
)


def _version() -> str:
    try:
        return version("triggers-service")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "unknown"


BUILD = Info("triggers_build", "The running version.")
BUILD.info({"version": _version()})


def count_fire(scheduled: bool) -> None:
    _FIRES[scheduled].inc()


def count_refused_fire() -> None:
    FIRES.labels("refused").inc()


def count_instance(kind: TaskKind, outcome: InstanceOutcome, n: int = 1) -> None:
    INSTANCES.labels(kind, outcome).inc(n)


_FIRES = {True: FIRES.labels("scheduled"), False: FIRES.labels("no_change")}
_SCRIPT_CHILDREN: dict[str, Any] = {}
_HTTP_CHILDREN: dict[tuple[str, str, int], tuple[Any, Any]] = {}


def observe_script(script: str, seconds: float) -> None:
    """One script call's round trip (the labelled child is looked up once per script)."""
    child = _SCRIPT_CHILDREN.get(script)
    if child is None:
        child = _SCRIPT_CHILDREN[script] = LUA_SCRIPT.labels(script)
    child.observe(seconds)


def observe_request(method: str, route: str, status: int, seconds: float) -> None:
    """One API request, by route template (children cached: the set of routes is closed)."""
    key = (method, route, status)
    children = _HTTP_CHILDREN.get(key)
    if children is None:
        children = _HTTP_CHILDREN[key] = (
            HTTP_REQUESTS.labels(method, route, str(status)),
            HTTP_DURATION.labels(method, route),
        )
    children[0].inc()
    children[1].observe(seconds)


def task_kind(run: str | None, using: str | None) -> TaskKind:
    """http (the run is a URL), external (handed to an outside worker) or python."""
    if using == "external":
        return "external"
    if run is not None and run.startswith(("http://", "https://")):
        return "http"
    return "python"


def serve_worker_metrics(host: str, port: int) -> Any:
    """This worker process's /metrics on ``host:port`` (a daemon thread)."""
    return _start_http_server(port, addr=host)
