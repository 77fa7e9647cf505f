"""Settings from the environment (pydantic-settings), each with its default and meaning.

Names are fixed by API.md (``TRIGGERS_REDIS_URL``, ...). README.md lists every setting.
"""

from __future__ import annotations

from pathlib import Path

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
    key_prefix: str = Field(
        default="trg",
        pattern=r"^[A-Za-z0-9_\-.:]{1,50}$",
        description="Prefix of every Redis key (to share one Redis between deployments).",
    )
