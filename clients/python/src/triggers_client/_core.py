"""What Client and AsyncClient share: how each call is built and answered, and when to retry.

A call is a ``Call`` (method, path, body, whether it may be repeated, how its answer is read);
the two clients differ only in how they send it and sleep between attempts.
"""

from __future__ import annotations

import email.utils
import os
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel

from triggers_client.errors import ProblemError, problem_error

T = TypeVar("T")
DEFAULT_URL = "http://127.0.0.1:8000"
RETRY_STATUSES = frozenset({429, 503})


def segment(name: str) -> str:
    """One path segment, percent-encoded: an instance ``t#0`` is ``t%230`` in a URL."""
    return quote(name, safe="")


@dataclass(frozen=True)
class RetryPolicy:
    """Retries of idempotent calls on connection errors, 429 and 503 (and 409 while the same
    Idempotency-Key is still in flight): exponential backoff with full jitter, or the answer's
    ``Retry-After`` when it gives one (at most ``max_retry_after`` seconds)."""

    attempts: int = 5
    backoff: float = 0.25
    max_backoff: float = 8.0
    max_retry_after: float = 60.0

    def delay(self, attempt: int, response: httpx.Response | None) -> float:
        after = retry_after(response) if response is not None else None
        if after is not None:
            return min(after, self.max_retry_after)
        return random.uniform(0, min(self.max_backoff, self.backoff * 2**attempt))


NO_RETRIES = RetryPolicy(attempts=1)


def retry_after(response: httpx.Response) -> float | None:
    """Retry-After as seconds: delta-seconds or an HTTP date."""
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def should_retry(response: httpx.Response) -> bool:
    if response.status_code in RETRY_STATUSES:
        return True
    if response.status_code == 409:  # our own earlier attempt still holds the key
        return "idempotency-in-flight" in response.text
    if response.status_code == 500:  # a change Redis may have applied: the service asks for a
        return "outcome-unknown" in response.text  # repeat with the same Idempotency-Key
    return False


@dataclass
class Call(Generic[T]):
    method: str
    path: str
    parse: Callable[[Any], T]
    body: Any = None
    params: dict[str, Any] = field(default_factory=dict)
    idempotency_key: str | None = None

    @property
    def idempotent(self) -> bool:
        """Safe to send again: GET, PUT and DELETE are; others only with an Idempotency-Key
        (the same key on every attempt, so the service does the work once)."""
        return self.method in ("GET", "PUT", "DELETE") or self.idempotency_key is not None

    def request_kwargs(self) -> dict[str, Any]:
        headers = {"Idempotency-Key": self.idempotency_key} if self.idempotency_key else {}
        kwargs: dict[str, Any] = {"headers": headers}
        if self.params:
            kwargs["params"] = {k: v for k, v in self.params.items() if v is not None}
        if self.body is not None:
            kwargs["json"] = self.body
        return kwargs

    def answer(self, response: httpx.Response) -> T:
        """The parsed answer, or the problem document raised as its exception."""
        if response.status_code >= 400:
            raise problem_of(response)
        return self.parse(response.json() if response.content else None)


def problem_of(response: httpx.Response) -> ProblemError:
    try:
        problem = response.json()
    except ValueError:
        problem = None
    if not isinstance(problem, dict):
        problem = {"title": response.reason_phrase, "detail": response.text[:500]}
    return problem_error(response.status_code, problem)


def new_key() -> str:
    return str(uuid.uuid4())


def settings(base_url: str | None, api_key: str | None) -> tuple[str, dict[str, str]]:
    """Base URL and headers: arguments, else TRIGGERS_URL / TRIGGERS_API_KEY, else localhost."""
    url = base_url or os.environ.get("TRIGGERS_URL") or DEFAULT_URL
    key = api_key if api_key is not None else os.environ.get("TRIGGERS_API_KEY")
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return url.rstrip("/"), headers


def dump(value: BaseModel | dict[str, Any]) -> dict[str, Any]:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", exclude_unset=True)
    return value


STREAM_IDLE_SECONDS = 60.0
"""A stream silent this long is taken for dead and resumed (the service sends a heartbeat every
TRIGGERS_EVENTS_HEARTBEAT seconds, 15 by default)."""


def stream_headers(last_id: str | None) -> dict[str, str]:
    headers = {"Accept": "text/event-stream"}
    if last_id:
        headers["Last-Event-ID"] = last_id
    return headers


def stream_timeout(deadline: float | None, connect: float | None) -> httpx.Timeout:
    """Reads wait at most until the deadline (then WaitTimeout), else STREAM_IDLE_SECONDS."""
    read = STREAM_IDLE_SECONDS
    if deadline is not None:
        read = max(0.01, min(read, deadline - time.monotonic()))
    return httpx.Timeout(connect, read=read)


def has_no_stream(response: httpx.Response) -> bool:
    """A service from before the event stream: the route does not exist."""
    return response.status_code == 404 and "route-not-found" in response.text
