"""Every operation of the API as a ``Call``, with UIDs in the client's namespace and names
percent-encoded. Mutating calls carry an Idempotency-Key generated per call (or the caller's)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, TypeAdapter

from triggers_client._core import Call, dump, new_key, segment
from triggers_client.models import (
    Config,
    Delivery,
    FireResult,
    Instance,
    ReplayResult,
    Session,
    UnresolvedInstance,
    UnresolvedTask,
)

UNSET: Any = object()
"""``replay(kwargs=UNSET)``: the parent's kwargs again (``{}`` means no kwargs)."""

_TASKS = TypeAdapter(list[UnresolvedTask])
_INSTANCES = TypeAdapter(list[UnresolvedInstance])
_DELIVERIES = TypeAdapter(list[Delivery])


class InstancePage(BaseModel):
    instances: list[Instance]
    next: str | None = None


class Calls:
    def __init__(self, namespace: str = "") -> None:
        self.namespace = namespace

    def uid(self, uid: str) -> str:
        """The session UID as the service knows it: the client's namespace + ``uid``."""
        return self.namespace + uid

    def _session(self, uid: str) -> str:
        return f"/sessions/{segment(self.uid(uid))}"

    def events_path(self, uid: str) -> str:
        """GET /sessions/{uid}/events: the event log (Server-Sent Events or JSON pages)."""
        return self._session(uid) + "/events"

    def _instance(self, uid: str, name: str) -> str:
        return f"{self._session(uid)}/instances/{segment(name)}"

    def configure(
        self, uid: str, config: Config | dict[str, Any], replace: bool, key: str | None
    ) -> Call[Config]:
        return Call(
            "PUT" if replace else "PATCH", self._session(uid) + "/config", Config.model_validate,
            body=dump(config), idempotency_key=key or new_key(),
        )  # fmt: skip

    def config(self, uid: str) -> Call[Config]:
        return Call("GET", self._session(uid) + "/config", Config.model_validate)

    def fire(
        self, uid: str, trigger: str, kwargs: dict[str, Any] | None, key: str | None
    ) -> Call[FireResult]:
        body = {"trigger": trigger, "kwargs": kwargs or {}}
        return Call(
            "POST", self._session(uid) + "/fire", FireResult.model_validate, body=body,
            idempotency_key=key or new_key(),
        )  # fmt: skip

    def session(self, uid: str) -> Call[Session]:
        return Call("GET", self._session(uid), Session.model_validate)

    def unresolved(self, uid: str) -> Call[list[UnresolvedTask]]:
        return Call(
            "GET", self._session(uid) + "/tasks/unresolved",
            lambda answer: _TASKS.validate_python(answer["tasks"]),
        )  # fmt: skip

    def unresolved_instances(self, uid: str) -> Call[list[UnresolvedInstance]]:
        return Call(
            "GET", self._session(uid) + "/instances/unresolved",
            lambda answer: _INSTANCES.validate_python(answer["instances"]),
        )  # fmt: skip

    def instances_page(
        self, uid: str, status: str | None, task: str | None, cursor: str | None, limit: int | None
    ) -> Call[InstancePage]:
        params = {"status": status, "task": task, "cursor": cursor, "limit": limit}
        return Call(
            "GET", self._session(uid) + "/instances", InstancePage.model_validate, params=params
        )

    def instance(self, uid: str, name: str) -> Call[Instance]:
        return Call("GET", self._instance(uid, name), Instance.model_validate)

    def replay(self, uid: str, name: str, kwargs: Any, key: str | None) -> Call[ReplayResult]:
        body = {} if kwargs is UNSET else {"kwargs": kwargs}
        return Call(
            "POST", self._instance(uid, name) + "/replay", ReplayResult.model_validate,
            body=body, idempotency_key=key or new_key(),
        )  # fmt: skip

    def skip(
        self, uid: str, name: str, cascade: bool, result: dict[str, Any] | None, key: str | None
    ) -> Call[Instance]:
        body: dict[str, Any] = {"cascade": cascade}
        if result is not None:
            body["result"] = result
        return Call(
            "POST", self._instance(uid, name) + "/skip", Instance.model_validate, body=body,
            idempotency_key=key or new_key(),
        )  # fmt: skip

    def set_status(
        self,
        uid: str,
        name: str,
        status: str,
        metadata: dict[str, Any] | None,
        cascade: bool,
        cascade_kwargs: dict[str, Any] | None,
        key: str | None,
    ) -> Call[Instance]:
        body: dict[str, Any] = {"status": status, "cascade": cascade}
        if metadata is not None:
            body["metadata"] = metadata
        if cascade_kwargs is not None:
            body["cascadeKwargs"] = cascade_kwargs
        return Call(
            "POST", self._instance(uid, name) + "/status", Instance.model_validate, body=body,
            idempotency_key=key or new_key(),
        )  # fmt: skip

    def delete(self, uid: str) -> Call[None]:
        return Call("DELETE", self._session(uid), lambda _: None)

    def deliveries(self, uid: str) -> Call[list[Delivery]]:
        return Call(
            "GET", self._session(uid) + "/webhooks/deliveries",
            lambda answer: _DELIVERIES.validate_python(answer["deliveries"]),
        )  # fmt: skip

    def redeliver(self, uid: str, delivery_id: str, key: str | None) -> Call[None]:
        path = f"{self._session(uid)}/webhooks/deliveries/{segment(delivery_id)}/redeliver"
        return Call("POST", path, lambda _: None, idempotency_key=key or new_key())
