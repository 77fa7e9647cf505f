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
    key_prefix: str = Field(
        default="trg",
        pattern=r"^[A-Za-z0-9_\-.:]{1,50}$",
        description="Prefix of every Redis key (to share one Redis between deployments).",
    )
