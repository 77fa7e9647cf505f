"""Request and answer bodies of the API (API.md), the single source of the OpenAPI document."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool
from pydantic.config import JsonDict

from service.api.validation import CheckedSubscription, CheckedTaskConfig, TaskName
from service.engine.models import (
    Instance,
    JsonObject,
    Name,
    Status,
    Subscription,
    TaskConfig,
    UnresolvedInstance,
)

QUESTIONNAIRE_EXAMPLE: JsonDict = {
    "tasks": {
        "t_importSubject": {"after": ["questionnaireSubmitted"], "run": "app.import_subject"},
        "t_page": {
            "after": ["t_importSubject"],
            "andEvery": "pageReceived",
            "run": "https://tasks.example.com/page",
            "withParams": {"pageReceived": {"source": "web"}},
        },
        "t_notify": {
            "after": ["t_importSubject"],
            "unless": ["withdrawn"],
            "run": "app.notify",
            "maxRetries": 5,
        },
    }
}

SUPER_SESSION_EXAMPLE: JsonDict = {
    "tasks": {
        "t_compareResponses": {
            "after": ["flora_page3", "fauna_page6"],
            "unless": ["withdrawn"],
            "run": "app.compare_responses",
        }
    },
    "webhooks": [{"url": "https://hooks.example.com/triggers", "events": ["sessionFinalized"]}],
}


class ConfigBody(BaseModel):
    """A session's configuration: tasks by name, optional webhook subscriptions (as answered;
    what a request may send is ConfigInput and ConfigPatch)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [QUESTIONNAIRE_EXAMPLE, SUPER_SESSION_EXAMPLE]},
    )

    tasks: dict[Name, TaskConfig] = Field(description="Tasks by name; a name is 1-200 chars, no #.")
    webhooks: list[Subscription] | None = Field(
        default=None, description="Subscribers of this session's events."
    )


class ConfigInput(BaseModel):
    """PUT: the whole configuration, checked for what could only fail later (validation.py)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [QUESTIONNAIRE_EXAMPLE, SUPER_SESSION_EXAMPLE]},
    )

    tasks: dict[TaskName, CheckedTaskConfig] = Field(
        description="Tasks by name; a name is 1-200 chars, no #, not starting with @."
    )
    webhooks: list[CheckedSubscription] | None = Field(
        default=None,
        description="Subscribers of this session's events; absent or null: none (PUT).",
    )


class ConfigPatch(ConfigInput):
    """PATCH: tasks merged by name; ``webhooks``, when present, replaces the whole list of
    subscriptions (absent or null keeps it). Either may be left out."""

    tasks: dict[TaskName, CheckedTaskConfig] = Field(
        default_factory=dict,
        description="Tasks to add or replace, by name (absent: none). Others stay.",
    )
    webhooks: list[CheckedSubscription] | None = Field(
        default=None,
        description="When present, replaces the session's subscriptions; absent: kept.",
    )


class FireBody(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"trigger": "flora_page3", "kwargs": {"responses": {"q1": "yes"}}}]
        },
    )

    trigger: Name
    kwargs: JsonObject | None = Field(default=None, description="Absent or null: {}.")


class FireAnswer(BaseModel):
    uid: str
    trigger: str
    scheduled: list[str] = Field(description="Instances this fire (and any cascade) scheduled.")
    abandoned: list[str] = Field(description="Instances this fire abandoned (unless complete).")
    finalized: bool = Field(
        default=False, description="True when this fire completed the session (sessionFinalized)."
    )


class SessionAnswer(BaseModel):
    uid: str
    tasks: dict[str, TaskConfig]
    instances: dict[str, Instance]
    latestKwargs: dict[str, Any]
    finalized: bool
    finalizedAt: str | None = None
    created: str
    updated: str
    version: int = Field(description="Increases with every change of the session.")
    sessionId: str | None = Field(
        default=None,
        description="Opaque id of this incarnation of the session, created with it: a session "
        "deleted (or expired) and created again under the same UID gets a new one. Part of "
        "HTTP tasks' Idempotency-Key and of webhook ids.",
    )
    webhooks: list[Subscription] | None = None
    instanceCount: int = Field(description="Instances the session holds.")
    instancesNext: str | None = Field(
        default=None,
        description="Set when the session holds more instances than one page "
        "(TRIGGERS_PAGE_SIZE): `instances` then holds the first page of "
        "GET /sessions/{uid}/instances, and this is the cursor of its next page.",
    )


class UnresolvedTaskView(TaskConfig):
    """A task with no instance yet or with an unresolved instance, and what it waits for."""

    name: str
    waitingFor: list[str] = Field(description="Triggers still missing before it can run.")
    reason: str = Field(description="Why the task is not resolved, in words.")


class UnresolvedTasksAnswer(BaseModel):
    tasks: list[UnresolvedTaskView]


class UnresolvedInstanceView(UnresolvedInstance):
    reason: str = Field(description="Why the instance is not resolved, in words.")


class UnresolvedInstancesAnswer(BaseModel):
    instances: list[UnresolvedInstanceView]


class InstancesAnswer(BaseModel):
    instances: list[Instance]
    next: str | None = Field(
        default=None, description="Cursor of the next page (query `cursor`); null: the last."
    )


class ReplayBody(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{}, {"kwargs": {"go": {"b": 2}}}]}
    )

    kwargs: dict[Name, JsonObject] | None = Field(
        default=None,
        description="Absent or null: the parent's kwargs; an object (even {}) replaces them.",
    )


class ReplayAnswer(BaseModel):
    replayed: str
    instance: str = Field(description="The new instance (the clone).")


class SkipBody(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"cascade": True, "result": {"r": 1}}]}
    )

    cascade: StrictBool = False
    result: JsonObject | None = None


class StatusBody(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"status": "finished", "metadata": {"note": "manual"}, "cascade": True,
                 "cascadeKwargs": {"x": 1}}
            ]
        },
    )  # fmt: skip

    status: Status
    metadata: JsonObject | None = None
    cascade: StrictBool = False
    cascadeKwargs: JsonObject | None = None


class Health(BaseModel):
    status: str
    checks: dict[str, str] = Field(default_factory=dict)
