"""Delivery records, in the session's hash slot.

Three keys per session (built here, read and written with single atomic commands, never
read-modify-write): ``...:wh:deliveries`` (id -> the delivery: url, type, body, created;
written once), ``...:wh:state`` (id -> pending, retrying, delivered or failed) and one list of
attempts per delivery (``...:wh:attempts:<id>``: time, status, error, duration).
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from pydantic import BaseModel, Field

from service.engine import Engine


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
    attempts: list[Attempt] = Field(default_factory=list)
    secret: str | None = Field(default=None, exclude=True)
    """The subscription's own signing secret, if it has one: used, never shown."""


class DeliveryStore:
    def __init__(self, engine: Engine) -> None:
        self.client = engine.client
        self.prefix = engine.prefix

    def _key(self, uid: str, name: str) -> str:
        return f"{self.prefix}:{{{uid}}}:wh:{name}"

    async def create(
        self, uid: str, delivery_id: str, url: str, kind: str, body: str, secret: str | None = None
    ) -> bool:
        """Records a new delivery; False if one with this id exists already."""
        record = {"url": url, "type": kind, "body": body, "created": int(time.time() * 1000)}
        if secret:
            record["secret"] = secret
        created = await self.client.hsetnx(
            self._key(uid, "deliveries"), delivery_id, orjson.dumps(record)
        )
        if created:
            await self.client.hsetnx(self._key(uid, "state"), delivery_id, "pending")
        return bool(created)

    async def get(self, uid: str, delivery_id: str) -> Delivery | None:
        raw = await self.client.hget(self._key(uid, "deliveries"), delivery_id)
        if raw is None:
            return None
        state = await self.state(uid, delivery_id)
        attempts = await self.client.lrange(self._key(uid, f"attempts:{delivery_id}"), 0, -1)
        return Delivery(
            id=delivery_id, state=state or "pending",
            attempts=[Attempt.model_validate_json(a) for a in attempts], **orjson.loads(raw),
        )  # fmt: skip

    async def all(self, uid: str) -> list[Delivery]:
        ids = await self.client.hkeys(self._key(uid, "deliveries"))
        found = [await self.get(uid, str(delivery_id)) for delivery_id in ids]
        return sorted((d for d in found if d), key=lambda d: (d.created, d.id))

    async def set_state(self, uid: str, delivery_id: str, state: str) -> None:
        await self.client.hset(self._key(uid, "state"), delivery_id, state)

    async def add_attempt(self, uid: str, delivery_id: str, attempt: Attempt) -> int:
        """Appends an attempt; returns how many there are now."""
        key = self._key(uid, f"attempts:{delivery_id}")
        return int(await self.client.rpush(key, attempt.model_dump_json()))

    async def delete(self, uid: str) -> None:
        """Forget every delivery of the session (with the session)."""
        ids = [str(i) for i in await self.client.hkeys(self._key(uid, "deliveries"))]
        keys = [self._key(uid, "deliveries"), self._key(uid, "state")]
        keys += [self._key(uid, f"attempts:{delivery_id}") for delivery_id in ids]
        await self.client.delete(*keys)

    async def state(self, uid: str, delivery_id: str) -> str | None:
        value: Any = await self.client.hget(self._key(uid, "state"), delivery_id)
        return None if value is None else str(value)
