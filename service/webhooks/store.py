"""Delivery records, in the session's hash slot, changed only by the session's Lua scripts.

Two keys per session, passed to every script with the session's own (lua/includes/lib.lua), so
they expire and are deleted with the session:

* ``...:wh:deliveries``: id -> the delivery (url, type, body, created, state, attempts, and
  ``chain``/``take``, below);
* ``...:wh:due``: id -> when its next attempt is due (ms); while an attempt runs, when it is
  overdue (its deadline). The sweeper reads it: a delivery whose Dramatiq message was lost (a
  Redis restart, a worker killed) is re-sent once overdue by the grace period, so no delivery
  stays ``retrying`` or ``pending`` for good.

Each change is one script: create (record + first attempt due now), begin an attempt (take the
due attempt, hold it for the attempt's deadline), finish it (record the attempt and what
follows), redeliver by hand. ``chain`` numbers the message chains: a redelivery starts a new
one and messages of the old chain are stale, so a redelivery during a scheduled retry never
makes two chains. ``take`` numbers attempts: an attempt's outcome applies only if nothing took
the delivery since.
"""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, BeforeValidator, Field

from service.engine import Engine
from service.engine.keys import delivery_keys


def _lua_list(value: Any) -> Any:
    """cjson encodes an empty Lua table as {}: read it back as the empty list it was."""
    return [] if value == {} else value


class Attempt(BaseModel):
    at: int = Field(description="Epoch milliseconds.")
    status: int | None = None
    error: str | None = None
    durationMs: int = 0


class Delivery(BaseModel):
    id: str
    url: str
    type: str
    body: str
    created: int
    state: str = "pending"
    attempts: Annotated[list[Attempt], BeforeValidator(_lua_list)] = Field(default_factory=list)
    secret: str | None = Field(default=None, exclude=True)
    """The subscription's own signing secret, if it has one: used, never shown."""


class Begun(BaseModel):
    """beginAttempt's answer (see lua/beginAttempt.lua)."""

    state: Literal["go", "not_due", "stale", "done", "gone"]
    take: int = 0
    chain: int = 0
    url: str = ""
    body: str = ""
    attempts: int = 0
    wait: int | None = None
    secret: str | None = None
    """The subscription's own signing secret, if it has one (deliveries are signed with it)."""


class Finished(BaseModel):
    """finishAttempt's answer: ``applied`` when the attempt decided what follows."""

    result: Literal["applied", "recorded", "gone"]
    chain: int = 0


class DeliveryStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.client = engine.client
        self.prefix = engine.prefix

    def _keys(self, uid: str) -> tuple[str, str]:
        records, due = delivery_keys(uid, self.prefix)
        return records, due

    def _grace(self) -> int:
        return self.engine.sweep_grace_ms

    async def create(
        self, uid: str, delivery_id: str, url: str, kind: str, body: str, secret: str | None = None
    ) -> bool:
        """Records a new delivery, its first attempt due now; False if one with this id exists
        already (or the session is gone). ``secret``: the subscription's own, kept with it."""
        fields: dict[str, Any] = {"url": url, "type": kind, "body": body, "created": _now_ms()}
        if secret:
            fields["secret"] = secret
        created = await self.engine.run_delivery(
            "createDelivery", uid, delivery_id, orjson.dumps(fields).decode(),
            attention_in_ms=self._grace(),
        )  # fmt: skip
        return bool(created)

    async def begin(self, uid: str, delivery_id: str, chain: int, hold_ms: int) -> Begun:
        """Take the due attempt for this message's ``chain``, held for ``hold_ms``."""
        answer = await self.engine.run_delivery(
            "beginAttempt", uid, delivery_id, chain, hold_ms,
            attention_in_ms=hold_ms + self._grace(),
        )  # fmt: skip
        return Begun.model_validate_json(answer)

    async def finish(
        self,
        uid: str,
        delivery_id: str,
        take: int,
        attempt: Attempt,
        state: str,
        retry_in_ms: int = 0,
    ) -> Finished:
        """Record the attempt; its outcome (``state``, a retry due in ``retry_in_ms``) applies
        only if nothing took the delivery since."""
        attention = retry_in_ms + self._grace() if state == "retrying" else None
        answer = await self.engine.run_delivery(
            "finishAttempt", uid, delivery_id, take, attempt.model_dump_json(), state,
            retry_in_ms, attention_in_ms=attention,
        )  # fmt: skip
        return Finished.model_validate_json(answer)

    async def redeliver(self, uid: str, delivery_id: str) -> int | None:
        """Start a new chain, its attempt due now; the chain number, or None if unknown."""
        chain = await self.engine.run_delivery(
            "redeliver", uid, delivery_id, attention_in_ms=self._grace()
        )
        return int(chain) or None

    async def get(self, uid: str, delivery_id: str) -> Delivery | None:
        raw = await self.client.hget(self._keys(uid)[0], delivery_id)
        return None if raw is None else _delivery(delivery_id, raw)

    async def all(self, uid: str) -> list[Delivery]:
        found = await self.client.hgetall(self._keys(uid)[0])
        deliveries = [_delivery(str(key), raw) for key, raw in found.items()]
        return sorted(deliveries, key=lambda d: (d.created, d.id))

    async def state(self, uid: str, delivery_id: str) -> str | None:
        delivery = await self.get(uid, delivery_id)
        return None if delivery is None else delivery.state


def _delivery(delivery_id: str, raw: str | bytes) -> Delivery:
    return Delivery(id=delivery_id, **orjson.loads(raw))


def _now_ms() -> int:
    return int(time.time() * 1000)
