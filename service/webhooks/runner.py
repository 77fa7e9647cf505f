"""The ``webhooks`` runner: turns an event of the outbox into deliveries, one per subscriber.

The scripts put an event in the outbox only when somebody subscribes to its type (the
session's webhooks, or the kinds of ``TRIGGERS_WEBHOOKS`` the engine passes them: lib.lua
``emit_event``), so an event nobody hears costs no script here (it cost a config read and an
acknowledgement per task).

Subscribers are the session's ``webhooks`` (its configuration) and the global ones of
``TRIGGERS_WEBHOOKS`` (a JSON list of ``{"url", "events"}``; ``"*"`` subscribes to every
event). Each delivery gets an id derived from the session (its UID and sessionId), the event
and the URL, so a re-dispatched event (the sweeper, after a crash) finds its deliveries
already recorded and does not deliver twice, while a session created again under the same UID
gets new ids (a stale record of the old incarnation never blocks its events); the delivery
actor then makes the attempts.
"""

from __future__ import annotations

import hashlib

import orjson
from pydantic import TypeAdapter

from service.engine import Engine, NotFoundError, Subscription
from service.engine.keys import session_keys
from service.settings import Settings
from service.webhooks.events import parse_member, payload
from service.webhooks.store import DeliveryStore
from service.worker.runners import ActorSender

SUBSCRIPTIONS = TypeAdapter(list[Subscription])


def delivery_id(uid: str, session_id: str, member: str, url: str) -> str:
    """The same for every dispatch of one event of one incarnation of a session (so it is
    delivered once), different for a session created again under the same UID (sessionId)."""
    key = f"{uid}|{session_id}|{member}|{url}"
    return "msg_" + hashlib.sha256(key.encode()).hexdigest()[:32]


async def session_id(engine: Engine, uid: str) -> str:
    """The sessionId of the session's current incarnation (one field of its meta hash)."""
    meta_key = session_keys(uid, engine.prefix)[0]
    stored, earlier = await engine.client.hmget(meta_key, "s", "sid")  # keys.SESSION_FIELDS
    return str(stored or earlier or "")


class WebhookRunner:
    key = "webhooks"
    acknowledges = True  # the deliveries are recorded: the event leaves the outbox

    def __init__(self) -> None:
        self.engine: Engine | None = None
        self.sender = ActorSender()
        self.global_subscriptions: list[Subscription] = []

    def bind(self, engine: Engine, settings: Settings) -> None:
        """The dispatcher's engine and settings (global subscriptions: TRIGGERS_WEBHOOKS)."""
        self.engine = engine
        if settings.webhooks:
            self.global_subscriptions = SUBSCRIPTIONS.validate_json(settings.webhooks)

    async def subscriptions(self, uid: str) -> list[Subscription]:
        assert self.engine is not None
        try:
            config = await self.engine.get_config(uid)
        except NotFoundError:
            return []
        return [*(config.webhooks or []), *self.global_subscriptions]

    async def dispatch(self, uid: str, member: str, delay_ms: int, scheduled_ms: int) -> None:
        assert self.engine is not None
        kind, _, _ = parse_member(member)
        matching = [s for s in await self.subscriptions(uid) if kind in s.events or "*" in s.events]
        if not matching:
            return
        store = DeliveryStore(self.engine)
        body = orjson.dumps(await payload(self.engine, uid, member)).decode()
        incarnation = await session_id(self.engine, uid)
        for subscription in matching:
            identifier = delivery_id(uid, incarnation, member, subscription.url)
            created = await store.create(
                uid, identifier, subscription.url, kind, body, subscription.secret
            )
            if created:
                await self.send(uid, identifier, chain=1)
            # else: recorded by an earlier dispatch of this event; its attempts are due in
            # Redis, where the sweeper re-sends any whose message was lost

    async def send(self, uid: str, identifier: str, delay_ms: int = 0, *, chain: int = 0) -> None:
        """A message for the next attempt of the delivery (``chain``: see store.py)."""
        from service.worker.actors import deliver_webhook

        await self.sender.send(deliver_webhook, (uid, identifier, chain), delay_ms)

    async def redeliver(self, uid: str, identifier: str) -> bool:
        """By hand: the delivery starts again (same id), whatever its state, as a new chain
        of attempts (a retry scheduled before does nothing: store.py)."""
        assert self.engine is not None
        chain = await DeliveryStore(self.engine).redeliver(uid, identifier)
        if chain is None:
            return False
        await self.send(uid, identifier, chain=chain)
        return True
