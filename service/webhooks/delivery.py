"""Delivering one webhook: signed POST, recorded attempt, retry on the Standard Webhooks
schedule.

Every attempt of a delivery sends the same body with the same ``webhook-id`` (receivers
dedupe on it), signed anew with the current timestamp. 2xx: delivered. 410 Gone: failed, no
retry (the subscriber asked to stop). 429/503 with ``Retry-After``: retried after that many
seconds. Anything else (other statuses, timeouts, refused or closed URLs): retried after the
next delay of ``TRIGGERS_WEBHOOK_RETRY_SCHEDULE`` (default 5 s, 5 min, 30 min, 2 h, 5 h, 10 h,
10 h, 14 h, 20 h: ten attempts over about two and a half days), with +-20 % jitter; after the
last one, failed. A URL the outbound policy closes is never called.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

import httpx

from service.outbound import OutboundPolicy, OutboundRefused
from service.signing import Signer
from service.webhooks.store import Attempt, Delivery, DeliveryStore


@dataclass
class Next:
    """What to do after an attempt: ``retry_in`` seconds, or nothing (None)."""

    state: str
    retry_in: float | None = None


def parse_schedule(text: str) -> list[float]:
    return [float(part) for part in text.split(",") if part.strip()]


class Deliverer:
    def __init__(
        self,
        store: DeliveryStore,
        client: httpx.AsyncClient,
        policy: OutboundPolicy,
        signer: Signer,
        schedule: list[float],
        timeout: float,
    ) -> None:
        self.store = store
        self.client = client
        self.policy = policy
        self.signer = signer
        self.schedule = schedule
        self.timeout = timeout

    async def attempt(self, uid: str, delivery: Delivery) -> Next:
        started = time.monotonic()
        status: int | None = None
        error: str | None = None
        retry_after: float | None = None
        try:
            target = await self.policy.resolve(delivery.url)
            headers = {
                "Content-Type": "application/json",
                "Host": target.netloc,
                **self.signer_for(delivery).headers(delivery.id, delivery.body),
            }
            response = await self.client.post(
                target.url, content=delivery.body, headers=headers, timeout=self.timeout,
                extensions=target.extensions,
            )  # fmt: skip
            status = response.status_code
            if status in (429, 503) and response.headers.get("retry-after", "").isdigit():
                retry_after = float(response.headers["retry-after"])
        except OutboundRefused as refused:
            error = f"OutboundRefused: {refused}"
        except httpx.HTTPError as failure:
            error = f"{type(failure).__name__}: {failure}"
        attempt = Attempt(
            at=int(time.time() * 1000), status=status, error=error,
            durationMs=int((time.monotonic() - started) * 1000),
        )  # fmt: skip
        count = await self.store.add_attempt(uid, delivery.id, attempt)
        decision = self.decide(status, error, count, retry_after)
        await self.store.set_state(uid, delivery.id, decision.state)
        return decision

    def signer_for(self, delivery: Delivery) -> Signer:
        """The subscription's own secret when it has one (receivers of different tenants
        cannot replay each other's messages), else the service's."""
        return Signer(delivery.secret) if delivery.secret else self.signer

    def decide(
        self, status: int | None, error: str | None, attempts: int, retry_after: float | None
    ) -> Next:
        if status is not None and 200 <= status < 300:
            return Next("delivered")
        if status == 410 or (error or "").startswith("OutboundRefused"):
            return Next("failed")
        if attempts > len(self.schedule):
            return Next("failed")
        delay = self.schedule[attempts - 1] * random.uniform(0.8, 1.2)
        return Next("retrying", retry_after if retry_after is not None else delay)
