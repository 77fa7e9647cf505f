"""Settings from the environment (pydantic-settings), each with its default and meaning.

Names are fixed by API.md (``TRIGGERS_REDIS_URL``, ...). README.md lists every setting.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TRIGGERS_", extra="ignore")

    redis_url: str | None = Field(
        default=None,
        description="Redis (or a Redis Cluster node) holding state; unset: the embedded Redis.",
    )
    redis_cluster: bool = Field(
        default=False, description="Treat TRIGGERS_REDIS_URL as a node of a Redis Cluster."
    )
    data_dir: Path = Field(
        default=Path(".triggers"), description="Where the embedded Redis keeps its files."
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
    outbound_allow: str | None = Field(
        default=None,
        description="Comma-separated hosts, host:port, addresses, CIDR networks or URL prefixes "
        "that HTTP tasks and webhooks may call although they are private or loopback "
        "(e.g. localhost for tasks on this machine).",
    )
    webhook_secret: str | None = Field(
        default=None,
        description="Signing secret (whsec_ + base64) for webhooks and HTTP tasks; unset: "
        "generated once and kept in TRIGGERS_DATA_DIR/webhook-secret.",
    )
    webhooks: str | None = Field(
        default=None,
        description='Global webhook subscriptions, a JSON list of {"url", "events"} '
        '("*" for every event), added to each session\'s own.',
    )
    webhook_timeout: float = Field(default=15.0, gt=0, description="Seconds per attempt.")
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
    http_max_response_bytes: int = Field(
        default=1024 * 1024, ge=1024, description="HTTP tasks: largest answer body read."
    )
    worker_processes: int = Field(default=2, ge=1, description="`triggers worker` processes.")
    worker_threads: int = Field(default=8, ge=1, description="Worker threads per process.")
    worker_poll_ms: int = Field(
        default=20,
        ge=1,
        le=1000,
        description="Idle poll of the broker queue (Dramatiq's worker_timeout). Dramatiq's "
        "1000 ms default adds up to a second per hop; 20 ms costs one cheap Lua call per "
        "queue every 20 ms per idle worker process.",
    )
    sweep_interval: float = Field(
        default=2.0, gt=0, description="Seconds between sweeps for stranded work."
    )
    sweep_grace: float = Field(
        default=5.0,
        ge=0,
        description="Seconds an outbox entry may wait for its enqueue before it is re-sent.",
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
    key_prefix: str = Field(
        default="trg",
        pattern=r"^[A-Za-z0-9_\-.:]{1,50}$",
        description="Prefix of every Redis key (to share one Redis between deployments).",
    )
