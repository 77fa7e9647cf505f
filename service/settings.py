"""Settings from the environment (pydantic-settings), each with its default and meaning.

Names are fixed by API.md (``TRIGGERS_REDIS_URL``, ...). README.md lists every setting.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from service.outbound import check_allow_list
from service.secret_format import check_signing_secret


def check_global_webhooks(value: str) -> str:
    """TRIGGERS_WEBHOOKS holds subscriptions that can be delivered (as a session's must).
    Imported here, when the setting is given, so that reading settings stays light."""
    from pydantic import TypeAdapter

    from service.api.validation import CheckedSubscription

    TypeAdapter(list[CheckedSubscription]).validate_json(value)
    return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TRIGGERS_", extra="ignore")

    redis_url: str | None = Field(
        default=None,
        description="Redis (or a Redis Cluster node) holding state; unset: the embedded Redis.",
    )
    redis_cluster: bool = Field(
        default=False, description="Treat TRIGGERS_REDIS_URL as a node of a Redis Cluster."
    )
    redis_max_connections: int = Field(
        default=100,
        ge=1,
        description="Redis connections per process (per cluster node): a request that finds "
        "them all busy waits for one (see TRIGGERS_REDIS_POOL_TIMEOUT) instead of failing.",
    )
    redis_pool_timeout: float = Field(
        default=10.0,
        gt=0,
        description="Seconds a request waits for a free Redis connection before it gets 503.",
    )
    data_dir: Path = Field(
        default=Path(".triggers"), description="Where the embedded Redis keeps its files."
    )
    url: str = Field(
        default="http://127.0.0.1:8000",
        description="The service the command line and service.client call (clients only; "
        "they read it from the environment without importing these settings).",
    )
    api_key: SecretStr | None = Field(
        default=None,
        description="The API key secret the command line and service.client send (clients only).",
    )
    manager: str = Field(
        default="finalizing", description="Manager key from the registry (default, finalizing)."
    )
    storage: str = Field(
        default="redis", description="Storage key from the registry (triggers.storages)."
    )
    session_ttl: int | None = Field(
        default=None,
        ge=1,
        description="Seconds a session is kept after its last change; unset: until deleted.",
    )
    lease_seconds: float = Field(
        default=30.0,
        gt=0,
        description="How long a claimed instance is held before the sweeper may re-dispatch it "
        "(the running worker renews it).",
    )
    auth: Literal["on", "off"] = Field(
        default="on", description="API key authentication; off only when said explicitly."
    )
    api_keys: str | None = Field(
        default=None,
        description="JSON list of API keys: name, sha256 of the secret, UID prefixes, scopes "
        "(see service/api/auth.py; `triggers api-key` makes one).",
    )
    max_body_bytes: int = Field(
        default=1024 * 1024, ge=1024, description="Largest request body accepted (413 beyond)."
    )
    header_timeout: float = Field(
        default=10.0,
        gt=0,
        description="Seconds a client has to send a request's headers, from connecting (or "
        "from the first byte of a request on a kept-alive connection); then 408 and closed.",
    )
    body_timeout: float = Field(
        default=30.0,
        gt=0,
        description="Seconds a client has to send a whole request body once its headers are "
        "in; then 408 and closed.",
    )
    keep_alive_timeout: int = Field(
        default=5,
        ge=1,
        description="Seconds an idle kept-alive connection stays open (uvicorn's "
        "timeout_keep_alive).",
    )
    idempotency_ttl: int = Field(
        default=24 * 3600, ge=1, description="Seconds an Idempotency-Key's answer is kept."
    )
    strict_redis: bool = Field(
        default=False,
        description="Refuse to start when Redis' maxmemory-policy is not noeviction "
        "(otherwise: a warning).",
    )
    broker_url: str | None = Field(
        default=None,
        description="Dramatiq broker: redis:// or amqp:// (RabbitMQ, needs the pika package); "
        "unset: the state Redis.",
    )
    outbound_allow: Annotated[str, AfterValidator(check_allow_list)] | None = Field(
        default=None,
        description="Comma-separated hosts, host:port, addresses, CIDR networks or URL prefixes "
        "that HTTP tasks and webhooks may call although they are private or loopback "
        "(e.g. localhost for tasks on this machine).",
    )
    webhook_secret: Annotated[str, AfterValidator(check_signing_secret)] | None = Field(
        default=None,
        description="Signing secret (whsec_ + base64 of 24 to 64 bytes) for webhooks and HTTP "
        "tasks; unset: generated once per deployment and kept in the state Redis "
        "(<prefix>:webhook-secret), with a copy in TRIGGERS_DATA_DIR/webhook-secret.",
    )
    webhooks: Annotated[str, AfterValidator(check_global_webhooks)] | None = Field(
        default=None,
        description='Global webhook subscriptions, a JSON list of {"url", "events", "secret"?} '
        '("*" for every event), added to each session\'s own; checked at start as a '
        "session's are.",
    )
    webhook_timeout: float = Field(
        default=15.0,
        gt=0,
        description="Seconds per webhook attempt, all of it (at most TRIGGERS_HTTP_MAX_TIMEOUT).",
    )
    webhook_retry_schedule: str = Field(
        default="5,300,1800,7200,18000,36000,36000,50400,72000",
        description="Seconds before each retry of a failed delivery (then it is failed): "
        "ten attempts over about two and a half days, each delay with +-20% jitter.",
    )
    task_modules: str | None = Field(
        default=None,
        description="Comma-separated Python modules whose @task functions workers can run.",
    )
    http_connect_timeout: float = Field(default=5.0, gt=0, description="HTTP tasks: seconds.")
    http_read_timeout: float = Field(default=60.0, gt=0, description="HTTP tasks: seconds.")
    http_max_timeout: float = Field(
        default=300.0,
        gt=0,
        description="The total deadline in seconds of one HTTP task request or webhook attempt "
        "(connect and every read together), and the most a per-task connectTimeout/readTimeout "
        "may ask for: no endpoint can hold a worker longer.",
    )
    http_max_response_bytes: int = Field(
        default=1024 * 1024, ge=1024, description="HTTP tasks: largest answer body read."
    )
    worker_processes: int = Field(default=2, ge=1, description="`triggers worker` processes.")
    worker_threads: int = Field(
        default=8,
        ge=1,
        description="Worker threads per process: the tasks one process runs at once (and "
        "the thread pool of its `def` Python tasks). The asyncio consumer holds twice as many "
        "runs: while a run records its outcome, the next one's claim and task take its slot.",
    )
    worker_consumer: Literal["asyncio", "dramatiq"] = Field(
        default="asyncio",
        description="How a worker consumes a Redis broker: `asyncio` fetches, runs and acks on "
        "one event loop (service/worker/consumer.py; 1.4-1.8 times the tasks/s of `dramatiq` "
        "for no-op Python tasks in bench/pipeline.py, half the worker CPU per task), "
        "`dramatiq` is Dramatiq's own thread-per-message Worker. Both take the same messages "
        "from the same queues; a RabbitMQ broker always uses Dramatiq's Worker.",
    )
    worker_poll_ms: int = Field(
        default=20,
        ge=1,
        le=1000,
        description="Idle poll of the broker queue (Dramatiq's worker_timeout). Dramatiq's "
        "1000 ms default adds up to a second per hop; 20 ms costs one cheap Lua call per "
        "queue every 20 ms per idle worker process. The asyncio consumer waits the poll in "
        "BLPOP for our producers' wake-ups, so it starts what they send at once and the poll "
        "only bounds the wait for messages sent otherwise (service/worker/wakeup.py).",
    )
    sweep_interval: float = Field(
        default=2.0, gt=0, description="Seconds between sweeps for stranded work."
    )
    sweep_grace: float = Field(
        default=5.0,
        ge=0,
        description="Seconds an outbox entry may wait for its enqueue before it is re-sent.",
    )
    heartbeat_interval: float = Field(
        default=5.0,
        gt=0,
        description="Seconds between a worker process's heartbeats; a worker is counted dead "
        "after three intervals without one.",
    )
    metrics_port: int | None = Field(
        default=None,
        ge=1,
        le=65535,
        description="Workers: the first port of the per-process /metrics endpoints (process i "
        "listens on this port + i); unset: workers serve no metrics. The API serves /metrics "
        "on its own port (the `metrics` API-key scope).",
    )
    metrics_host: str = Field(
        default="127.0.0.1",
        description="Address the workers' metrics ports listen on (0.0.0.0 in a container).",
    )
    drain_seconds: float = Field(
        default=0.0,
        ge=0,
        le=300,
        description="`triggers serve`: seconds between SIGTERM and closing the listening "
        "socket, during which /readyz answers 503 so a load balancer stops sending requests "
        "(set it above the readiness probe's period, e.g. 10 in Kubernetes).",
    )
    api_workers: int = Field(
        default=1,
        ge=1,
        description="`triggers serve`: API processes sharing the listening port (`--workers` "
        "overrides it). One process uses one core; the embedded Redis, the in-process worker "
        "and its sweeper stay one, in the parent process, which replaces an API process that "
        "dies.",
    )
    log_format: Literal["json", "console"] = Field(
        default="console",
        description="`triggers serve` and `triggers worker` logs: json (one object per line, "
        "for production) or console (text for a terminal).",
    )
    access_log: bool = Field(
        default=False,
        description="`triggers serve`: log one line per HTTP request (uvicorn's access log, "
        "with the request's context fields). Off by default: formatting a line per request "
        "costs more CPU than every metric of the request together (bench/observability.py); "
        "the request metrics count every request anyway.",
    )
    failpoint: str | None = Field(
        default=None,
        description="Testing only: after-commit-before-enqueue makes the API process exit "
        "between a committed change and its enqueue.",
    )
    max_tasks: int = Field(
        default=500,
        ge=0,
        description="Most tasks in one session's configuration (422 beyond; 0: no limit).",
    )
    max_triggers_per_list: int = Field(
        default=16,
        ge=0,
        description="Most triggers in one task's after (with andEvery) or unless list.",
    )
    max_tasks_per_trigger: int = Field(
        default=250,
        ge=0,
        description="Most tasks one trigger may concern (after, andEvery or unless).",
    )
    max_instances: int = Field(
        default=100_000,
        ge=0,
        description="Most instances one session may hold: fires, retries and replays that "
        "would pass it are refused (422).",
    )
    max_open_instances: int = Field(
        default=500,
        ge=0,
        description="Most unstarted instances one session may hold (a fire visits each of "
        "the tasks it concerns): fires that could create more are refused (422).",
    )
    page_size: int = Field(
        default=1_000,
        ge=1,
        le=10_000,
        description="Most instances one read request decodes: the largest `limit` of "
        "GET /sessions/{uid}/instances, and the instances GET /sessions/{uid} includes.",
    )
    event_log_max: int = Field(
        default=100,
        ge=0,
        le=1_000_000,
        description="Entries kept in each session's event log (the newest, exactly; one entry "
        "per change); 0 turns the log off. An entry takes 40-200 bytes, so the "
        "default keeps a session's log near the size of a few dozen instances (bench/memory.py).",
    )
    events_heartbeat: float = Field(
        default=15.0,
        gt=0,
        le=300,
        description="Seconds between heartbeat comments on an idle event stream (SSE).",
    )
    ui: bool = Field(default=True, description="Serve the inspector page at /ui/.")
    key_prefix: str = Field(
        default="trg",
        pattern=r"^[A-Za-z0-9_\-.:]{1,50}$",
        description="Prefix of every Redis key (to share one Redis between deployments).",
    )
