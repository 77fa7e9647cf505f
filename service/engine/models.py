"""Typed models of configurations, instances and what transitions return.

They validate input before any script runs (so a script never sees malformed data), define the
stored form of a task (B9), and decode the records the scripts keep. Field names are camelCase,
as in the original framework's JSON configuration and in API.md.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, NamedTuple

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictInt,
    StringConstraints,
    field_validator,
    model_validator,
)

from service.secret_format import check_signing_secret

STATUSES = (
    "unstarted",
    "scheduled",
    "running",
    "finished",
    "failed",
    "replayed",
    "skipped",
    "abandoned",
)
Status = Literal[
    "unstarted", "scheduled", "running", "finished", "failed", "replayed", "skipped", "abandoned"
]
RESOLVED_STATUSES = frozenset({"finished", "abandoned", "skipped", "replayed"})
FINAL_TRIGGER = "sessionFinalized"

UID_PATTERN = (
    r"^(?:[A-Za-z0-9_\-:@+][A-Za-z0-9_\-.:@+]{0,199}"
    r"|\.[A-Za-z0-9_\-:@+][A-Za-z0-9_\-.:@+]{0,198}"
    r"|\.\.[A-Za-z0-9_\-.:@+]{1,198})$"
)
"""1 to 200 characters from letters, digits and _ - . : @ +, except ``.`` and ``..`` (a client
or proxy resolves those as dot-segments of the path: such a session could not be read back).
Written without look-ahead, which pydantic-core's regex engine lacks."""


NAME_PATTERN = r"^[^#\x00-\x1f\x7f]{1,200}$"
Name = Annotated[str, StringConstraints(pattern=NAME_PATTERN)]
"""A task or trigger name: 1 to 200 characters, no '#', no control characters (checked by
pydantic-core's regex engine, and stated in the OpenAPI document)."""

SessionUid = Annotated[str, StringConstraints(pattern=UID_PATTERN)]
"""A session UID: 1 to 200 characters from letters, digits and _ - . : @ +."""

JsonObject = dict[str, Any]


def _lua_list(value: Any) -> Any:
    """Lua's cjson encodes an empty table as {}; in a list-typed field it was an empty list."""
    return [] if value == {} else value


StrList = Annotated[list[str], BeforeValidator(_lua_list)]


def _dedupe(names: list[str]) -> list[str]:
    return list(dict.fromkeys(names))


class TaskConfig(BaseModel):
    """One task of a session's configuration (section B), in its stored form.

    ``after`` is stored with the ``andEvery`` trigger included (B9). Keys other than the known
    ones are custom directives: kept and returned as given (B8).
    """

    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={
            "examples": [
                {
                    "after": ["flora_page3", "fauna_page6"],
                    "run": "t_compare",
                    "unless": ["withdrawn"],
                },
                {"after": [], "andEvery": "pageReceived", "run": "https://tasks.example/page"},
            ]
        },
    )

    after: list[Name] = Field(
        description="Triggers that must all have fired (any order) before the task runs."
    )
    run: Annotated[str, StringConstraints(min_length=1, max_length=2000)] = Field(
        description="An http(s) URL (an HTTP task) or the name of a registered Python task."
    )
    unless: list[Name] = Field(
        default_factory=list,
        description="An unstarted instance that has seen all of these triggers is abandoned.",
    )
    andEvery: Name | None = Field(
        default=None, description="A trigger that creates a new instance every time it fires."
    )
    withParams: dict[str, JsonObject] = Field(
        default_factory=dict,
        description="Kwargs merged under the instance's kwargs when it runs (recursive merge).",
    )
    using: Annotated[str, StringConstraints(min_length=1, max_length=200)] = Field(
        default="dramatiq", description="Runner key: dramatiq (default) or external."
    )
    maxRetries: StrictInt = Field(
        default=3, ge=0, le=1000, description="How many retries a task may ask for (G2)."
    )

    @field_validator("andEvery", mode="before")
    @classmethod
    def _empty_every_is_absent(cls, value: Any) -> Any:
        return None if value == "" else value  # B4: empty string or null means absent

    @model_validator(mode="after")
    def _stored_form(self) -> TaskConfig:
        if self.model_extra and "name" in self.model_extra:
            raise ValueError("'name' is reserved and cannot be a custom directive")
        after = list(self.after)
        if self.andEvery is not None:
            after.append(self.andEvery)
        if not after:
            raise ValueError(
                "'after' is empty and there is no 'andEvery': the task could never run"
            )
        self.after = _dedupe(after)
        self.unless = _dedupe(self.unless)
        return self

    def engine_view(self) -> JsonObject:
        """What the scripts need of the task (the ``defs`` hash), nothing user-defined."""
        view: JsonObject = {
            "after": self.after,
            "unless": self.unless,
            "maxRetries": self.maxRetries,
            "using": self.using,
        }
        if self.andEvery is not None:
            view["every"] = self.andEvery
        return view


class Subscription(BaseModel):
    """A webhook subscription: where to POST which events, optionally signed with its own
    secret. The secret is write-only: excluded from every serialization (answers), kept only
    in the stored form."""

    url: Annotated[str, StringConstraints(min_length=1, max_length=2000)]
    events: list[Name] = Field(default_factory=lambda: [FINAL_TRIGGER])
    secret: Annotated[str, AfterValidator(check_signing_secret)] | None = Field(
        default=None,
        exclude=True,
        description="Write-only: deliveries to this URL are signed with it instead of the "
        "service's secret ('whsec_' + base64 of 24 to 64 bytes). Never returned.",
        json_schema_extra={"writeOnly": True},
    )

    def stored_form(self) -> dict[str, Any]:
        """What the session keeps: the subscription with its secret, if any."""
        stored = self.model_dump(mode="json")
        if self.secret is not None:
            stored["secret"] = self.secret
        return stored


class SessionConfig(BaseModel):
    """A session's configuration: tasks by name (in configuration order) and subscriptions."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "tasks": {
                        "t_compareResponses": {
                            "after": ["flora_page3", "fauna_page6"],
                            "run": "app.compare_responses",
                        }
                    }
                }
            ]
        }
    )

    tasks: dict[Name, TaskConfig]
    webhooks: list[Subscription] | None = None


class Instance(BaseModel):
    """One (potential) execution of a task (A4, C2), as clients see it."""

    name: str
    task: str
    status: Status
    kwargs: dict[str, Any] = Field(default_factory=dict)
    abandonState: StrList = Field(default_factory=list)
    metadata: dict[str, Any] = Field(default_factory=dict)

    @property
    def number(self) -> int:
        return int(self.name.rsplit("#", 1)[1])

    @property
    def resolved(self) -> bool:
        return self.status in RESOLVED_STATUSES


class UnresolvedInstance(Instance):
    waitingFor: StrList = Field(
        default_factory=list, description="Triggers this instance still misses before it can run."
    )


class UnresolvedTask(BaseModel):
    name: str
    config: TaskConfig
    waitingFor: StrList = Field(default_factory=list)


class FireRecord(BaseModel):
    """One fire performed by a transition: what it scheduled and abandoned (for post-fire hooks)."""

    trigger: str
    scheduled: StrList = Field(default_factory=list)
    abandoned: StrList = Field(default_factory=list)


class Dispatch(NamedTuple):
    """One instance to hand to its runner: name, runner key (`using`), due time (ms), and
    when the instance became scheduled (ms; 0: not told). ``scheduled`` names one dispatch of
    an instance: the same for the sweeper's re-sends of it, new for a later one (a retry)."""

    name: str
    runner: str
    due: int
    scheduled: int = 0


class SweepResult(BaseModel):
    """What sweepSession found: stranded outbox entries, expired leases, webhook deliveries
    overdue ((id, chain) pairs), and when the session next needs the sweeper (ms; None when
    nothing is outstanding)."""

    stranded: Annotated[list[Dispatch], BeforeValidator(_lua_list)] = Field(default_factory=list)
    expired: Annotated[list[Dispatch], BeforeValidator(_lua_list)] = Field(default_factory=list)
    deliveries: Annotated[list[tuple[str, int]], BeforeValidator(_lua_list)] = Field(
        default_factory=list
    )
    next: int | None = None
    later: int | None = None
    outbox: int = 0
    leases: int = 0


class Outcome(BaseModel):
    """What the caller must do after a transition: enqueue ``scheduled``, announce ``finalized``.

    ``fires`` lists every fire the transition made, in order: the fire itself, a cascade, and the
    ``sessionFinalized`` fire when the transition completed the session.
    """

    fires: Annotated[list[FireRecord], BeforeValidator(_lua_list)] = Field(default_factory=list)
    finalized: bool = False
    instance: str | None = None
    clone: str | None = None
    retried: bool | None = None
    cascaded: bool | None = None
    due: int | None = None
    record: Instance | None = None
    dispatch: Annotated[list[Dispatch], BeforeValidator(_lua_list)] = Field(
        default_factory=list,
        description="Instances this change put in the outbox, for their runners to take.",
    )

    @property
    def scheduled(self) -> list[str]:
        names = [name for fire in self.fires for name in fire.scheduled]
        if self.clone is not None:
            names.append(self.clone)
        return names

    @property
    def abandoned(self) -> list[str]:
        return [name for fire in self.fires for name in fire.abandoned]


class Claim(BaseModel):
    """The answer to a claim: ``state`` is claimed, not_due, busy or done (see claim.lua)."""

    state: Literal["claimed", "not_due", "busy", "done"]
    token: str | None = None
    attempt: int | None = None
    expires: int | None = None
    sessionId: str | None = None
    wait: int | None = None
    status: str | None = None
    instance: Instance | None = None
    task: TaskConfig | None = None
    kwargs: JsonObject | None = None
    scheduledMs: int | None = None
    """When the claimed instance became scheduled (ms since the epoch); None for a retry's or
    replay's clone, which may wait out a cooldown on purpose (the schedule-to-start metric)."""


class SessionSnapshot(BaseModel):
    """The whole state of a session (C1, C8) plus the service's session metadata."""

    uid: str
    tasks: dict[str, TaskConfig]
    instances: dict[str, Instance]
    latestKwargs: dict[str, Any]
    finalized: bool
    finalizedAt: int | None = None
    created: int
    updated: int
    version: int
    sessionId: str | None = None
    webhooks: list[Subscription] | None = None
    instanceCount: int = Field(default=0, description="Instances the session holds.")
    instancesNext: str | None = Field(
        default=None,
        description="Set when `instances` holds only the first page: the cursor of the next "
        "page of GET /sessions/{uid}/instances.",
    )
