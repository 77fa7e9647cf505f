"""Delivering one webhook: signed POST, recorded attempt, retry on the Standard Webhooks
schedule.

Every attempt of a delivery sends the same body with the same ``webhook-id`` (receivers
dedupe on it), signed anew with the current timestamp. 2xx: delivered. 410 Gone: failed, no
retry (the subscriber asked to stop). 429/503 with ``Retry-After``: retried after that many
seconds. Anything else (other statuses, timeouts, refused or closed URLs, any exception at all,
an unusable URL included): a failed attempt, recorded, retried after the next delay of
``TRIGGERS_WEBHOOK_RETRY_SCHEDULE`` (default 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h, 14 h,
20 h: ten attempts over about two and a half days), with +-20 % jitter; after the last one,
failed. A URL the outbound policy closes is never called.

An attempt has a total deadline (``TRIGGERS_WEBHOOK_TIMEOUT``, at most
``TRIGGERS_HTTP_MAX_TIMEOUT``), not only per-read timeouts: a receiver that dribbles its answer
cannot hold a worker. Only the status and headers matter, so at most ``MAX_ANSWER_BYTES`` of
the answer are read before the connection is closed: a huge answer never loads into memory.

The attempt's due time lives in Redis (store.py), where the sweeper finds it: a lost message
delays a delivery by the grace period, never loses it.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass

import orjson

from service import metrics
from service.outbound import OutboundPolicy, OutboundRefused
from service.outbound_http import OutboundClient, connecting_to
from service.signing import Signer
from service.webhooks.store import Attempt, Begun, DeliveryStore

MAX_ANSWER_BYTES = 4096
"""Most of a receiver's answer body read (then the connection is closed)."""
HOLD_MARGIN_MS = 2_000
"""An attempt's due time is held this much past its deadline before the sweeper may re-send."""


@dataclass
class Next:
    """What to do after an attempt: ``retry_in`` seconds, or nothing (None)."""

    state: str
    retry_in: float | None = None


@dataclass
class Answer:
    """What one attempt got: a status (and Retry-After), or an error."""

    status: int | None = None
    error: str | None = None
    retry_after: float | None = None


def parse_schedule(text: str) -> list[float]:
    return [float(part) for part in text.split(",") if part.strip()]


class Deliverer:
    def __init__(
        self,
        store: DeliveryStore,
        client: OutboundClient,
        policy: OutboundPolicy,
        signer: Signer,
        schedule: list[float],
        timeout: float,
    ) -> None:
        """``timeout``: the total deadline of one attempt (seconds)."""
        self.store = store
        self.client = client
        self.policy = policy
        self.signer = signer
        self.schedule = schedule
        self.timeout = timeout

    async def attempt(self, uid: str, delivery_id: str, chain: int) -> float | None:
        """One attempt of the delivery, if this message's chain has one due; returns the delay
        (s) before the next attempt when a retry follows (its message: the caller's job)."""
        hold_ms = int(self.timeout * 1000) + HOLD_MARGIN_MS
        begun = await self.store.begin(uid, delivery_id, chain, hold_ms)
        if begun.state != "go":
            return None
        started = time.monotonic()
        answer = await self.call(delivery_id, begun)
        metrics.WEBHOOK_ATTEMPT.observe(time.monotonic() - started)
        attempt = Attempt(
            at=int(time.time() * 1000), status=answer.status, error=answer.error,
            durationMs=int((time.monotonic() - started) * 1000),
        )  # fmt: skip
        decision = self.decide(answer.status, answer.error, begun.attempts + 1, answer.retry_after)
        retry_ms = int((decision.retry_in or 0) * 1000)
        finished = await self.store.finish(
            uid, delivery_id, begun.take, attempt, decision.state, retry_ms
        )
        if finished.result == "applied":
            metrics.WEBHOOK_DELIVERIES.labels(event_type(begun.body), decision.state).inc()
        return decision.retry_in if finished.result == "applied" else None

    async def call(self, delivery_id: str, begun: Begun) -> Answer:
        """The POST, within the attempt's deadline; any failure is an Answer with an error."""
        try:
            async with asyncio.timeout(self.timeout):
                return await self._post(delivery_id, begun)
        except OutboundRefused as refused:
            return Answer(error=f"OutboundRefused: {refused}")
        except TimeoutError:
            return Answer(error=f"Timeout: no complete answer within {self.timeout:g} s")
        except Exception as failure:  # an unusable URL, a broken connection: a failed attempt
            return Answer(error=f"{type(failure).__name__}: {failure}"[:2000])

    async def _post(self, delivery_id: str, begun: Begun) -> Answer:
        target = await self.policy.resolve(begun.url)
        headers = {
            "Content-Type": "application/json",
            **self.signer_for(begun).headers(delivery_id, begun.body),
        }
        request = self.client.build_request(
            "POST", target.url, content=begun.body, headers=headers, timeout=self.timeout
        )
        with connecting_to(target):
            response = await self.client.send(request, stream=True)
        try:
            read = 0
            async for chunk in response.aiter_raw():
                read += len(chunk)
                if read >= MAX_ANSWER_BYTES:
                    break  # the rest is never read: closing drops the connection
        finally:
            await response.aclose()
        retry_after: float | None = None
        if response.status_code in (429, 503):
            value = response.headers.get("retry-after", "")
            retry_after = float(value) if value.isdigit() else None
        return Answer(status=response.status_code, retry_after=retry_after)

    def signer_for(self, delivery: Begun) -> Signer:
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


def event_type(body: str) -> str:
    """The event's ``type`` (a closed set: the metrics label), from the delivery's body."""
    try:
        found = orjson.loads(body).get("type")
    except (orjson.JSONDecodeError, AttributeError):
        return "unknown"
    return found if isinstance(found, str) else "unknown"
