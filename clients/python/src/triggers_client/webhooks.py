"""Verifying webhooks (Standard Webhooks): ``verify_webhook`` for any framework, and
``webhook_dependency`` / ``session_finalized`` for FastAPI and Starlette.

The secret is the service's ``TRIGGERS_WEBHOOK_SECRET`` (``whsec_...``), or the subscription's
own ``secret``. Verification checks the HMAC over ``id.timestamp.body`` and refuses timestamps
more than five minutes away, so a captured delivery cannot be replayed later.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Collection, Mapping
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from triggers_client.errors import InvalidWebhook
from triggers_client.models import WebhookEvent

if TYPE_CHECKING:
    from starlette.requests import Request


def verify_signature(
    headers: Mapping[str, str], body: bytes | str, secret: str | None = None
) -> Any:
    """The JSON body once its Standard Webhooks signature verifies, else InvalidWebhook: for
    HTTP task endpoints (signed like webhooks, with a task's body) and webhooks alike.

    ``secret`` left out: TRIGGERS_WEBHOOK_SECRET. ``body`` must be the raw bytes received
    (re-serialized JSON would not verify)."""
    secret = secret or os.environ.get("TRIGGERS_WEBHOOK_SECRET")
    if not secret:
        raise InvalidWebhook("no secret: pass one or set TRIGGERS_WEBHOOK_SECRET")
    try:
        text = body.decode() if isinstance(body, bytes) else body
    except UnicodeDecodeError as error:
        raise InvalidWebhook("the body is not UTF-8") from error
    lowered = {key.lower(): value for key, value in headers.items()}
    try:
        return Webhook(secret).verify(text, lowered)
    except WebhookVerificationError as error:
        raise InvalidWebhook(str(error)) from error


def verify_webhook(
    headers: Mapping[str, str], body: bytes | str, secret: str | None = None
) -> WebhookEvent:
    """The delivery's event (``type``, ``session``, ``timestamp``, ``data``) once its signature
    verifies, else InvalidWebhook (see verify_signature)."""
    payload = verify_signature(headers, body, secret)
    try:
        return WebhookEvent.model_validate(payload)
    except ValidationError as error:
        raise InvalidWebhook(f"not a Triggers event: {error}") from error


def webhook_dependency(
    secret: str | None = None, events: Collection[str] = ("sessionFinalized",)
) -> Callable[[Request], Awaitable[WebhookEvent]]:
    """A FastAPI dependency (``Depends(webhook_dependency(secret))``) giving the verified event:
    401 when the signature does not verify, 422 for an event not in ``events``."""
    from starlette.exceptions import HTTPException
    from starlette.requests import Request

    async def dependency(request: Request) -> WebhookEvent:
        body = await request.body()
        try:
            event = verify_webhook(request.headers, body, secret)
        except InvalidWebhook as error:
            raise HTTPException(status_code=401, detail=str(error)) from error
        if events and event.type not in events:
            raise HTTPException(status_code=422, detail=f"unexpected event {event.type!r}")
        return event

    # This module's annotations are strings (postponed evaluation) and starlette is imported
    # here only: give FastAPI the real types, or it takes ``request`` for a query parameter.
    dependency.__annotations__ = {"request": Request, "return": WebhookEvent}
    return dependency


def session_finalized(secret: str | None = None) -> Any:
    """``event: WebhookEvent = session_finalized(secret)`` as a FastAPI parameter default:
    the verified ``sessionFinalized`` event (needs fastapi installed)."""
    from fastapi import Depends

    return Depends(webhook_dependency(secret, ("sessionFinalized",)))
