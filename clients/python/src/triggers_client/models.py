"""Typed answers of the service (pydantic), named after the OpenAPI schemas they mirror.

Every model allows extra fields: a newer service may answer with more than this client knows,
and that must not break an application (tests check these models against openapi.json).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Status = Literal[
    "unstarted", "scheduled", "running", "finished", "failed", "replayed", "skipped", "abandoned"
]
RESOLVED = frozenset({"finished", "abandoned", "skipped", "replayed"})


class _Model(BaseModel):
    model_config = ConfigDict(extra="allow")


class TaskConfig(_Model):
    """One task: ``after`` triggers (any order), ``unless``, ``andEvery``, what to ``run``.
    Other keys are custom directives, kept by the service as given."""

    run: str
    after: list[str] = Field(default_factory=list)
    unless: list[str] = Field(default_factory=list)
    andEvery: str | None = None
    withParams: dict[str, dict[str, Any]] = Field(default_factory=dict)
    using: str = "dramatiq"
    maxRetries: int = 3


class Subscription(_Model):
    url: str
    events: list[str] = Field(default_factory=lambda: ["sessionFinalized"])
    secret: str | None = Field(default=None, description="Write-only: never answered.")


class Config(_Model):
    """Schema ConfigBody: a session's configuration."""

    tasks: dict[str, TaskConfig] = Field(default_factory=dict)
    webhooks: list[Subscription] | None = None


class FireResult(_Model):
    """Schema FireAnswer."""

    uid: str
    trigger: str
    scheduled: list[str]
    abandoned: list[str]
    finalized: bool = False


class Instance(_Model):
    name: str
    task: str
    status: Status
    kwargs: dict[str, Any] = Field(default_factory=dict)
    abandonState: list[str] = Field(default_factory=list)
    metadata: dict[str, Any] = Field(default_factory=dict)

    @property
    def resolved(self) -> bool:
        return self.status in RESOLVED

    @property
    def result(self) -> Any:
        """What the task answered (``metadata.result``), None before it finished."""
        return self.metadata.get("result")


class Session(_Model):
    """Schema SessionAnswer: the whole state of a session."""

    uid: str
    tasks: dict[str, TaskConfig]
    instances: dict[str, Instance]
    latestKwargs: dict[str, Any]
    finalized: bool
    finalizedAt: str | None = None
    created: str
    updated: str
    version: int
    webhooks: list[Subscription] | None = None
    sessionId: str | None = None
    """This incarnation of the session (part of HTTP tasks' Idempotency-Key)."""
    instanceCount: int = 0
    instancesNext: str | None = None
    """Set for a session bigger than one page: ``instances`` is the first page, and
    ``Client.instances`` iterates all of them."""


class UnresolvedTask(TaskConfig):
    """Schema UnresolvedTaskView: a task not resolved yet, and the triggers it waits for."""

    name: str
    waitingFor: list[str] = Field(default_factory=list)
    reason: str = ""


class UnresolvedInstance(Instance):
    """Schema UnresolvedInstanceView."""

    waitingFor: list[str] = Field(default_factory=list)
    reason: str = ""


class ReplayResult(_Model):
    """Schema ReplayAnswer: ``instance`` is the new instance (the clone)."""

    replayed: str
    instance: str


class Attempt(_Model):
    at: int = Field(description="Epoch milliseconds.")
    status: int | None = None
    error: str | None = None
    durationMs: int = 0


class Delivery(_Model):
    """One webhook delivery of a session, with every attempt (``state``: pending, delivered,
    failed, ...); ``body`` is the JSON text sent."""

    id: str
    url: str
    type: str
    body: str
    created: int
    state: str = "pending"
    attempts: list[Attempt] = Field(default_factory=list)


class Event(_Model):
    """One change of a session, as ``events()`` yields it: ``event`` is the kind (``fired``,
    ``instanceScheduled``, ``instanceFinished``, ..., ``finalized``), ``data`` its details."""

    event: str
    data: dict[str, Any] = Field(default_factory=dict)
    id: str | None = None
    """The event log's id (stream events only): pass it as ``since`` to resume after it."""


class WebhookEvent(_Model):
    """A verified webhook delivery's body (``type`` e.g. ``sessionFinalized``)."""

    type: str
    session: str
    timestamp: str
    data: dict[str, Any] = Field(default_factory=dict)
